"""Worker of the data-parallel and resume tests: runs eo-fusion's training loop on fixed chips.

Run as ``python _train_worker.py OUT [--die-at STEP]`` (one process) or under
``torchrun --nproc_per_node 2`` (gloo). The chips are fixed pseudo-random 13-band S2 chips with
a 3-class label raster (derived from the bands, so the loss can fall); the model is the
fine-tuning code's LandCoverModel (with batch norm) on a random nano encoder. Rank 0 writes the
loss curve to ``OUT/curve.json``. ``--die-at N`` ends the process abruptly (``os._exit``, as a
kill would) after step N.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from eo_fusion.devices import init_distributed, resolve_device
from eo_fusion.models.encoder import EncoderConfig, SpectralViT, feature_blocks
from eo_fusion.models.heads import LandCoverModel
from eo_fusion.train.loop import LoopOptions, fit
from eo_fusion.train.tasks import ChipArrays, SegmentationTask

KEYS = [
    f"s2:{b}"
    for b in (
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B10",
        "B11",
        "B12",
    )
]
RANGES = (
    "coastal",
    "blue",
    "green",
    "red",
    "red_edge_1",
    "red_edge_2",
    "red_edge_3",
    "nir_broad",
    "nir_narrow",
    "water_vapour",
    "cirrus",
    "swir_1",
    "swir_2",
)


def chips(n: int = 8, size: int = 16) -> ChipArrays:
    rng = np.random.default_rng(42)
    x = rng.normal(size=(n, len(KEYS), size, size)).astype(np.float32)
    label = np.digitize(x[:, 3] - x[:, 7], [-0.5, 0.5]).astype(np.int64)
    label[:, :2, :] = -1  # some unlabelled pixels, as in real chips
    return ChipArrays([f"c{i}" for i in range(n)], x, KEYS, None, label, np.zeros_like(label))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--die-at", type=int, default=0)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    torch.manual_seed(0)
    net = LandCoverModel(
        SpectralViT(EncoderConfig("nano", 4, 16, RANGES)), 3, feature_blocks(4, 4), 16
    )
    opts = LoopOptions(
        steps=args.steps,
        batch_size=4,
        lr=1e-3,
        warmup_steps=0,
        weight_decay=0.0,
        checkpoint_every=2,
        seed=7,
        resume_key="worker",
        device=resolve_device("cpu"),
        dtype=None,
    )

    def on_step(step: int, loss: float) -> None:
        if args.die_at and step == args.die_at:
            sys.stdout.flush()
            os._exit(137)

    curve = fit(
        net,
        SegmentationTask(chips()),
        lambda m, x: m(x, KEYS),
        opts,
        args.out,
        dist=dist,
        on_step=on_step,
    )
    if dist.is_main:
        (args.out / "curve.json").write_text(json.dumps(curve))
    if dist.world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
