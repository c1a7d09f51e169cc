"""bf16 autocast against fp32 on the demo: the Slovenia sample stack that `make demo` maps,
with the bundled model (issue 15: class maps agree on ≥ 99.5 % of pixels)."""

from __future__ import annotations

import numpy as np
import pytest

from eo_fusion.models import load_model, predict

bench = pytest.importorskip("benchmarks.bench_inference")


@pytest.fixture(scope="module")
def demo():
    """The demo job's inputs over its whole grid as one tile (102 × 101 px at 10 m) and the LULC
    class at each pixel centre: what the window benchmark measures accuracy on."""
    return bench.demo_stack_and_labels()


def test_bf16_and_fp32_class_maps_agree_on_the_demo(demo):
    demo_stack, lab = demo
    model = load_model()
    ids = np.array([c.id for c in model.card.task("landcover").classes])
    maps = {}
    for precision in ("fp32", "bf16"):
        p = predict(demo_stack, model, device="cpu", precision=precision, batch_size=32)
        assert p.attrs["precision"] == precision
        maps[precision] = ids[p.values.argmax(0)]
        probs = p.values
    agree = float((maps["fp32"] == maps["bf16"]).mean())
    assert maps["fp32"].size == 102 * 101
    assert agree >= 0.995, f"bf16 and fp32 class maps agree on only {agree:.3%} of pixels"
    assert np.isfinite(probs).all()
    # Neither precision is worse against the reference land use (agreement, not just speed).
    have = np.isin(lab, ids)
    oa = {k: float((m[have] == lab[have]).mean()) for k, m in maps.items()}
    assert have.sum() > 9000 and oa["fp32"] > 0.6
    assert abs(oa["bf16"] - oa["fp32"]) <= 0.005, oa
