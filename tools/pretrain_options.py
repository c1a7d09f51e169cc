"""Measure the pretraining options on the sample data (the table in docs/model.md).

Pretrains the nano encoder once per variant on the sample catalog's Slovenia scene and the
BigEarthNet S2 L2A + S1 pairs (same scenes, steps and seed for every variant), then scores each
frozen encoder with a linear probe: a logistic regression on the last block's patch tokens
(nearest-token upsampling to pixels) of the Slovenia S2 L1C composite, trained on the pixels
outside the spatial hold-out blocks (25 px, a quarter) and scored on the held-out ones, for
three hold-out draws. A second measurement takes the SMARTIES-style model, removes one trained
projection (S2 B05's range) and compares embedding B05 by inverse-distance interpolation of
the neighbouring ranges with dropping the band: the error of the tokens against those of the intact
model (relative to their spread), and probe OA.

Usage (about 30 minutes on the shared 2-core build machine; `--reuse` skips finished runs)::

    PYTHONPATH=. python tools/pretrain_options.py --steps 400 --out out/pretrain_options
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eo_fusion.models import checkpoint as ck
from eo_fusion.models.card import normalize_bands
from eo_fusion.models.config import load_finetune_spec, load_pretrain_spec
from eo_fusion.models.encoder import EncoderConfig, SpectralViT
from eo_fusion.train.data import Scene
from eo_fusion.train.finetune import holdout_mask
from eo_fusion.train.pretrain import pretrain
from eo_fusion.train.sources import load_scenes

REPO = Path(__file__).resolve().parents[1]
S2 = [f"s2:B{b}" for b in ("01", "02", "03", "04", "05", "06", "07", "08", "8A", "09", "10")]
S2 += ["s2:B11", "s2:B12"]
VARIANTS: dict[str, dict[str, Any]] = {
    "SMARTIES: patch targets over all bands, percentile norm., mixup pairs": {
        "target_norm": "patch", "normalization": "percentile", "mixup": "pairs", "mixup_prob": 1.0,
    },
    "per-band targets, percentile norm., mixup pairs": {
        "target_norm": "band", "normalization": "percentile", "mixup": "pairs", "mixup_prob": 1.0,
    },
    "per-band targets, mean/std norm., one swapped sequence on half the steps (before)": {
        "target_norm": "band", "normalization": "standard", "mixup": "swap", "mixup_prob": 0.5,
    },
}  # fmt: skip


def tokens(enc: SpectralViT, model: ck.LoadedModel, scene: Scene, keys: list[str]) -> np.ndarray:
    """Last-block patch tokens of the scene's S2 composite upsampled to pixels, ``(H, W, D)``."""
    have = scene.keys["s2-l1c"]
    arr = scene.arrays["s2-l1c"][[have.index(k) for k in keys]]
    x = np.nan_to_num(normalize_bands(arr, [model.card.band_norm("s2-l1c", k) for k in keys]))
    h, w = x.shape[-2:]
    p = enc.cfg.patch_size
    x = np.pad(x, ((0, 0), (0, -h % p), (0, -w % p)), mode="edge")
    with torch.inference_mode():
        _, (last,) = enc.eval()(torch.from_numpy(x[None]), keys, take=(enc.cfg.shape.depth - 1,))
    gh, gw = x.shape[-2] // p, x.shape[-1] // p
    grid = last[0].reshape(gh, gw, -1).numpy()
    return grid.repeat(p, 0).repeat(p, 1)[:h, :w]


def probe(feats: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """OA of a logistic regression on the held-out blocks (``seed`` draws the blocks)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    lab = np.nan_to_num(labels, nan=0).astype(int)
    hold = holdout_mask(lab.shape, 25, 0.25, seed)
    train, test = (lab > 0) & ~hold, (lab > 0) & hold
    scaler = StandardScaler().fit(feats[train])
    clf = LogisticRegression(max_iter=300).fit(scaler.transform(feats[train]), lab[train])
    return float((clf.predict(scaler.transform(feats[test])) == lab[test]).mean())


def probe_all(feats: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    oas = [probe(feats, labels, s) for s in range(3)]
    return float(np.mean(oas)), float(np.std(oas))


def without_range(model: ck.LoadedModel, name: str) -> SpectralViT:
    """A copy of the encoder that lacks the projection of range ``name``."""
    cfg: EncoderConfig = model.encoder.cfg
    ranges = tuple(r for r in cfg.ranges if r != name)
    enc = SpectralViT(EncoderConfig(**{**cfg.to_dict(), "ranges": ranges}))
    state = {k: v for k, v in model.encoder.state_dict().items() if f".{name}." not in k}
    enc.load_state_dict(state)
    return enc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "pretrain_options")
    ap.add_argument("--reuse", action="store_true", help="load <out>/v<i>/model if it exists")
    ap.add_argument("--seed", type=int, default=0, help="pretraining seed")
    args = ap.parse_args()
    base = load_pretrain_spec(REPO / "pipelines" / "pretrain_sample.yaml")
    keep = [s for s in base.data.scenes if s.name == "slovenia" or "bigearthnet" in s.name]
    data = base.data.model_copy(update={"scenes": keep})
    scenes = load_scenes(data, progress=False)
    lc_spec = load_finetune_spec(REPO / "pipelines" / "finetune_landcover_sample.yaml")
    (slovenia,) = load_scenes(lc_spec.data, progress=False)
    assert slovenia.labels is not None
    results: dict[str, Any] = {
        "steps": args.steps, "seed": args.seed, "scenes": [s.name for s in scenes]
    }  # fmt: skip
    models = {}
    for i, (label, opts) in enumerate(VARIANTS.items()):
        spec = base.model_copy(
            update={
                "data": data,
                "steps": args.steps,
                "out": args.out / f"v{i}",
                **opts,
                "seed": args.seed,
            }
        )
        done = Path(spec.out) / "model"
        reuse = args.reuse and (done / ck.CARD).is_file()
        model = ck.load(done) if reuse else pretrain(spec, scenes, progress=False)
        models[label] = model
        oa, sd = probe_all(tokens(model.encoder, model, slovenia, S2), slovenia.labels)
        results[label] = {"probe_oa": oa, "probe_oa_sd": sd}
        print(f"{label}: probe OA {100 * oa:.1f} ± {100 * sd:.1f} %", flush=True)
    # Reference: the same encoder with random weights (no pretraining), SMARTIES normalisation.
    rnd = copy.deepcopy(models[next(iter(VARIANTS))])
    torch.manual_seed(0)
    rnd.encoder = SpectralViT(rnd.encoder.cfg)
    oa, sd = probe_all(tokens(rnd.encoder, rnd, slovenia, S2), slovenia.labels)
    results["random init (no pretraining)"] = {"probe_oa": oa, "probe_oa_sd": sd}
    print(f"random init: probe OA {100 * oa:.1f} ± {100 * sd:.1f} %", flush=True)
    smarties = models[next(iter(VARIANTS))]
    full = tokens(smarties.encoder, smarties, slovenia, S2)
    reduced = without_range(smarties, "red_edge_1")
    interp = tokens(reduced, smarties, slovenia, S2)
    dropped = tokens(reduced, smarties, slovenia, [k for k in S2 if k != "s2:B05"])

    centre = full.reshape(-1, full.shape[-1]).mean(0)

    def rel_error(a: np.ndarray) -> float:
        """Token error relative to the spread of the intact model's tokens (0 = identical)."""
        return float(np.linalg.norm(a - full) / np.linalg.norm(full - centre))

    for label, feats in (("B05 interpolated", interp), ("B05 dropped", dropped)):
        oa, sd = probe_all(feats, slovenia.labels)
        results[label] = {"relative_token_error": rel_error(feats), "probe_oa": oa, "sd": sd}
        print(f"{label}: token error {rel_error(feats):.3f}, OA {100 * oa:.1f} %", flush=True)
    oa, sd = probe_all(full, slovenia.labels)
    results["B05 with its trained projection"] = {"probe_oa": oa, "sd": sd}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
