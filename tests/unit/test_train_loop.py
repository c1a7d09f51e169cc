"""The training loop's pieces: global batches, batch norm, mixed precision, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eo_fusion.devices import DistInfo, resolve_device
from eo_fusion.models.encoder import EncoderConfig, SpectralViT, feature_blocks
from eo_fusion.models.heads import LandCoverModel
from eo_fusion.train.loop import (
    GlobalBatchNorm2d,
    LoopOptions,
    _my_share,
    fit,
    global_batch,
    global_batchnorm,
)
from eo_fusion.train.tasks import ChipArrays, ParcelTask, SegmentationTask

pytestmark = pytest.mark.slow  # several short trainings (~1 min on 2 shared cores)

KEYS = ["s2:B02", "s2:B03", "s2:B04", "s2:B08"]


def _chips(n: int = 6, size: int = 8) -> ChipArrays:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, len(KEYS), size, size)).astype(np.float32)
    label = (x[:, 3] > x[:, 2]).astype(np.int64)
    field = np.zeros_like(label)
    field[:, :, size // 2 :] = 1
    label[:, 0] = -1
    return ChipArrays([f"c{i}" for i in range(n)], x, KEYS, None, label, field)


def _net() -> LandCoverModel:
    torch.manual_seed(0)
    cfg = EncoderConfig("nano", 4, 8, ("blue", "green", "red", "nir_broad"))
    return LandCoverModel(SpectralViT(cfg), 2, feature_blocks(4, 4), 8)


def _opts(**kw) -> LoopOptions:
    base = dict(
        steps=3,
        batch_size=4,
        lr=1e-3,
        warmup_steps=0,
        weight_decay=0.0,
        checkpoint_every=2,
        seed=3,
        resume_key="k",
        device=resolve_device("cpu"),
        dtype=None,
    )
    return LoopOptions(**(base | kw))


def test_global_batches_are_shared_and_partitioned():
    a, b = global_batch(5, 7, 10, 4), global_batch(5, 7, 10, 4)
    assert a.tolist() == b.tolist() and global_batch(5, 8, 10, 4).tolist() != a.tolist()
    parts = [_my_share(a, DistInfo(rank=r, world=2))[0].tolist() for r in (0, 1)]
    assert parts[0] + parts[1] == a.tolist()
    with pytest.raises(Exception, match="multiple of the 3 processes"):
        _my_share(a, DistInfo(rank=0, world=3))


def test_global_batchnorm_is_batchnorm_without_a_process_group():
    bn = torch.nn.BatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5)
    ref = bn(x)
    model = global_batchnorm(torch.nn.Sequential(bn))
    assert isinstance(model[0], GlobalBatchNorm2d)
    assert set(model.state_dict()) == {
        "0.weight",
        "0.bias",
        "0.running_mean",
        "0.running_var",
        "0.num_batches_tracked",
    }
    torch.testing.assert_close(model(x), ref)


def test_bf16_autocast_on_the_cpu_trains(tmp_path):
    curve = fit(
        _net(),
        SegmentationTask(_chips()),
        lambda m, x: m(x, KEYS),
        _opts(dtype=torch.bfloat16),
        tmp_path,
    )
    assert len(curve) == 3 and all(np.isfinite(c[1]) for c in curve)


def test_parcel_batches_pool_the_field_pixels(tmp_path):
    task = ParcelTask(_chips(), {0: 0, 1: 1})
    assert len(task) == 12  # two fields in each of six chips
    batch = task.batch([0, 1], step=0, seed=0, offset=0)
    logits = torch.zeros(2, 2, 8, 8)
    logits[:, 1] = 1.0
    pooled = ParcelTask.pooled(logits, batch["m"])
    torch.testing.assert_close(pooled, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    curve = fit(_net(), task, lambda m, x: m(x, KEYS), _opts(), tmp_path)
    assert len(curve) == 3


def test_checkpoint_resume_is_exact(tmp_path):
    full = fit(
        _net(), SegmentationTask(_chips()), lambda m, x: m(x, KEYS), _opts(steps=4), tmp_path / "a"
    )

    class Killed(Exception):
        pass

    def die(step: int, loss: float) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        fit(
            _net(),
            SegmentationTask(_chips()),
            lambda m, x: m(x, KEYS),
            _opts(steps=4),
            tmp_path / "b",
            on_step=die,
        )
    resumed = fit(
        _net(), SegmentationTask(_chips()), lambda m, x: m(x, KEYS), _opts(steps=4), tmp_path / "b"
    )
    assert [c[0] for c in resumed] == [1, 2, 3, 4]
    np.testing.assert_allclose([c[1] for c in resumed], [c[1] for c in full], rtol=1e-6)
    # a checkpoint of other settings is not resumed
    other = fit(
        _net(),
        SegmentationTask(_chips()),
        lambda m, x: m(x, KEYS),
        _opts(steps=4, resume_key="other"),
        tmp_path / "b",
    )
    assert [c[0] for c in other] == [1, 2, 3, 4]
