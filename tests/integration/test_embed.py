"""`eo-fusion embed` on the Slovenia sample AOI: tile-size invariance, STAC Item, COG, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import yaml
import zarr

from eo_fusion.cli import main
from eo_fusion.pipeline.stac_products import validate_stac

pytestmark = pytest.mark.slow


def _job(repo_root, tmp_path, name: str, tile: int, halo: int = 32):
    cfg = yaml.safe_load((repo_root / "pipelines" / "embed_sample.yaml").read_text())
    cfg["aoi"]["geojson"] = str(repo_root / "catalogs/sample/data/slovenia/bbox.geojson")
    cfg |= {"name": name, "device": "cpu"}
    cfg["grid"] |= {"tile_size": tile, "halo": halo}
    cfg["output"] = {"dir": str(tmp_path / "out"), "cog": tile == 64}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_dir(tmp_path, name):
    (run,) = (tmp_path / "out").glob(f"{name}-*")
    return run


@pytest.fixture(scope="module")
def embedded(repo_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embed")
    for name, tile in (("big", 64), ("small", 32)):
        assert main(["embed", str(_job(repo_root, tmp, name, tile))]) == 0
    return tmp


def _emb(run):
    return np.asarray(zarr.open_array(str(run / "embeddings.zarr" / "embedding"), mode="r")[:])


def test_embeddings_do_not_depend_on_the_tile_size(embedded):
    big, small = _emb(_run_dir(embedded, "big")), _emb(_run_dir(embedded, "small"))
    assert big.shape == (128, 26, 26)  # 102 x 101 px grid, padded to 104 x 104, 4 px patches
    assert np.isfinite(big).all() and big.std() > 0.1
    np.testing.assert_allclose(big, small, rtol=1e-5, atol=1e-5)
    manifest = json.loads((_run_dir(embedded, "small") / "embed.json").read_text())
    assert len(manifest["tiles"]) == 16


def test_stac_item_and_cog(embedded):
    run = _run_dir(embedded, "big")
    item = json.loads((run / "item.json").read_text())
    assert validate_stac(item)  # offline schemas; raises when invalid
    assert item["properties"]["proj:shape"] == [26, 26]
    assert item["properties"]["proj:transform"][0] == 40.0
    assert item["properties"]["start_datetime"].startswith("2015-07-01")
    with rasterio.open(run / "embeddings.tif") as src:
        assert src.count == 128 and src.res == (40.0, 40.0)
        np.testing.assert_allclose(src.read(5), _emb(run)[4], rtol=1e-6)


def test_rerun_resumes_and_recomputes_a_damaged_tile(embedded, repo_root, capsys):
    job = _job(repo_root, embedded, "big", 64)
    assert main(["embed", str(job)]) == 0
    assert "(0 computed)" in capsys.readouterr().out
    run = _run_dir(embedded, "big")
    before = _emb(run)
    arr = zarr.open_array(str(run / "embeddings.zarr" / "embedding"), mode="r+")
    arr[:, 0:2, 0:2] = 0.0  # damage tile r000_c000
    assert main(["embed", str(job)]) == 0
    assert "(1 computed)" in capsys.readouterr().out
    np.testing.assert_array_equal(_emb(run), before)


def test_bad_tiling_exits_2(repo_root, tmp_path, capsys):
    assert main(["embed", str(_job(repo_root, tmp_path, "bad", 64, halo=8))]) == 2
    assert "halo" in capsys.readouterr().err


def test_api_embed_in_memory():
    from eo_fusion import api

    cat = api.open_catalog()
    bbox = (14.555, 45.870, 14.560, 45.873)
    found = api.search(cat, "s2-l1c", bbox=bbox, max_cloud=50)
    stack = api.stack({"s2-l1c": found}, api.grid(bbox, 10), chunk_size=64).compute()
    stack = stack.isel(y=slice(0, 32), x=slice(0, 32))
    emb = api.embed_stack(stack, device="cpu")
    assert emb.dims == ("dim", "y", "x") and emb.shape == (128, 8, 8)
    assert np.isfinite(emb.values).all()
