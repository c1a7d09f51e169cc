"""bf16 autocast against fp32 on the demo: the Slovenia sample stack that `make demo` maps,
with the bundled model (issue 15: class maps agree on ≥ 99.5 % of pixels)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import yaml

from eo_fusion import api
from eo_fusion.models import load_model, predict
from eo_fusion.stack import build_stack


@pytest.fixture(scope="module")
def demo_stack(repo_root, tmp_path_factory):
    """The demo job's inputs over its whole grid as one tile (102 × 101 px at 10 m)."""
    src = repo_root / "pipelines" / "sample_landcover.yaml"
    cfg = yaml.safe_load(src.read_text())
    cfg["aoi"]["geojson"] = str((src.parent / cfg["aoi"]["geojson"]).resolve())
    cfg["grid"] |= {"tile_size": 512, "halo": 0}
    cfg["output"]["dir"] = str(tmp_path_factory.mktemp("out"))
    path = tmp_path_factory.mktemp("job") / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (task,) = api.plan_job(path).tasks
    return build_stack(task.tile.padded, dict(task.items), dict(task.modalities), gdal=task.gdal)


def _labels(repo_root, stack):
    """The LULC raster's class at each stack pixel centre (same CRS and 10 m grid)."""
    with rasterio.open(repo_root / "catalogs/sample/data/slovenia/LULC_slovenia_10m.tif") as r:
        lab, inv = r.read(1), ~r.transform
    xs, ys = np.meshgrid(stack["x"].values, stack["y"].values)
    col, row = (np.floor(v).astype(int) for v in inv * (xs, ys))
    ok = (row >= 0) & (row < lab.shape[0]) & (col >= 0) & (col < lab.shape[1])
    out = np.zeros(xs.shape, "int32")
    out[ok] = lab[row[ok], col[ok]]
    return out


def test_bf16_and_fp32_class_maps_agree_on_the_demo(repo_root, demo_stack):
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
    lab = _labels(repo_root, demo_stack)
    have = np.isin(lab, ids)
    oa = {k: float((m[have] == lab[have]).mean()) for k, m in maps.items()}
    assert have.sum() > 9000 and oa["fp32"] > 0.6
    assert abs(oa["bf16"] - oa["fp32"]) <= 0.005, oa
