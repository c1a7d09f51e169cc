"""Smoke test of the stacking benchmark (tiny grid), and the lazy stack's automatic halo."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from eo_fusion.api import DEFAULT_HALO, auto_halo
from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import ModalitySpec

bench = pytest.importorskip("benchmarks.bench_stack")


def _item(modality: str) -> NormalizedItem:
    return NormalizedItem(
        "x", "c", modality, datetime(2020, 1, 1, tzinfo=UTC), (0, 0, 1, 1), {}, {}
    )


def test_auto_halo_is_zero_only_for_pixel_local_stacks() -> None:
    spec = ModalitySpec()
    assert auto_halo({"s2-l2a": [_item("s2-l2a")]}, {"s2-l2a": spec}) == 0
    # L1C items get the s2cloudless mask, whose loader reads its own context
    # (test_s2cloudless: chunks without a halo equal the whole-grid build).
    assert auto_halo({"s2-l2a": [_item("s2-l1c")]}, {"s2-l2a": spec}) == 0
    assert auto_halo({"s2-l1c": [_item("s2-l1c")]}, {"s2-l1c": spec}) == 0
    assert auto_halo({"s2-l2a": [_item("landsat-c2l2")]}, {"s2-l2a": spec}) == DEFAULT_HALO
    two = {"s2-l2a": spec, "dem": spec}  # co-registration looks at a neighbourhood
    assert auto_halo({"s2-l2a": [_item("s2-l2a")], "dem": [_item("dem")]}, two) == DEFAULT_HALO


@pytest.mark.skipif(not bench.DATA.exists(), reason="needs /work/shared/data/s2_18svg")
def test_benchmark_peers_agree_on_a_tiny_reprojected_grid(tmp_path) -> None:
    meta = bench.make_scene(tmp_path, crop_m=6000)
    gbox = bench.target_grid(meta, 200)
    eager, valid = bench.run_eager(str(tmp_path), meta, gbox)
    ref, _ = bench.run_odc(str(tmp_path), meta, gbox)
    assert eager.shape == ref.shape == (3, len(bench.BANDS), 200, 200)
    assert 0.5 < valid.mean() < 1.0  # the derived SCL masks some clouds
    both = valid[:, None] & np.isfinite(ref)
    # odc-stac warps through GDAL's approximate transformer (error threshold 0.125 px); the
    # stack transforms every pixel centre exactly, so at sharp edges a few pixels differ.
    diff = np.abs(eager[both] - ref[both] * 1e-4)
    assert (diff <= 2e-4).mean() >= 0.999, f"{(diff > 2e-4).mean():.4%} differ by > 2e-4"
    assert diff.max() < 5e-3
    for run in (bench.run_lazy, bench.run_tiles):  # no halo / the map job's tiles
        got, got_valid = run(str(tmp_path), meta, gbox)
        np.testing.assert_array_equal(got_valid, valid, err_msg=run.__name__)
        np.testing.assert_allclose(got, eager, atol=1e-3, equal_nan=True, err_msg=run.__name__)
