"""Very-high-resolution sources on real data: Autzen aerial photo + lidar, NAIP, OSM Monaco."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from eo_fusion.catalogs.local import local_item
from eo_fusion.config import ModalitySpec
from eo_fusion.grid import grid_from_aoi
from eo_fusion.sources.lidar import grid_points_max, read_points
from eo_fusion.sources.osm import load_osm, osm_features, write_geoparquet
from eo_fusion.sources.reader import RasterioReader
from eo_fusion.stack import build_stack, modality_array

DATA = Path(__file__).resolve().parents[2] / "catalogs" / "sample" / "data"
AUTZEN = DATA / "autzen"
WHEN = datetime(2020, 1, 1, tzinfo=UTC)


def _autzen_photo():
    wkt = (AUTZEN / "autzen-srs.wkt").read_text()
    files = {
        "aerial:red": (AUTZEN / "autzen.jpg", 1),
        "aerial:green": (AUTZEN / "autzen.jpg", 2),
        "aerial:blue": (AUTZEN / "autzen.jpg", 3),
    }
    return local_item("autzen-photo", "aerial", files, WHEN, crs=wkt), wkt


def test_autzen_lidar_colours_match_the_photo_on_one_grid() -> None:
    photo, wkt = _autzen_photo()
    grid = grid_from_aoi(photo.bbox, 1.0)  # UTM 10N, 1 m
    assert grid.crs.epsg == 32610
    ds = build_stack(grid, {"aerial": [photo]}, {"aerial": ModalitySpec()})
    img = modality_array(ds, "aerial").sel(band=["aerial:red", "aerial:green", "aerial:blue"])
    points = read_points(str(AUTZEN / "autzen-thin-srs.las"), wkt)
    dsm = grid_points_max(points, grid)
    # The colour of each cell's highest return: the points whose height is the cell's DSM value.
    local = points.to_crs(grid.crs)
    assert local.rgb is not None
    col, row = ~grid.transform @ (local.x, local.y)
    col, row = np.floor(col).astype(int), np.floor(row).astype(int)
    h, w = grid.shape.yx
    top = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    top[top] = local.z[top].astype(np.float32) == dsm[row[top], col[top]]
    rgb = np.full((3, h, w), np.nan, dtype=np.float32)
    rgb[:, row[top], col[top]] = local.rgb[top].T
    hit = np.isfinite(rgb[0]) & np.isfinite(img.values).all(axis=0)
    assert hit.sum() > 9000  # nearly every one of the 10,653 points has its own cell
    r = np.corrcoef(img.values[:, hit].ravel(), rgb[:, hit].ravel())[0, 1]
    assert r >= 0.95, r
    # The DSM from the same points is in metres (the file stores international feet).
    assert 100 < np.nanmedian(dsm) < 200


def test_point_cloud_dsm_takes_the_highest_return() -> None:
    wkt = (AUTZEN / "autzen-srs.wkt").read_text()
    points = read_points(str(AUTZEN / "autzen-thin-srs.las"), wkt)
    grid = grid_from_aoi((-123.07, 44.055, -123.066, 44.058), 20.0)
    dsm = grid_points_max(points, grid)
    local = points.to_crs(grid.crs)
    col, row = ~grid.transform @ (local.x, local.y)
    col, row = np.floor(col).astype(int), np.floor(row).astype(int)
    for r, c in [(1, 1), (3, 5), (7, 2)]:
        sel = (row == r) & (col == c)
        if sel.any():
            assert dsm[r, c] == np.float32(local.z[sel].max())
        else:
            assert np.isnan(dsm[r, c])


def test_aerial_on_a_finer_sub_grid_nests_in_the_coarse_grid() -> None:
    photo, _ = _autzen_photo()
    grid = grid_from_aoi((-123.070, 44.054, -123.066, 44.057), 10.0)
    fine = build_stack(grid, {"aerial": [photo]}, {"aerial": ModalitySpec(resolution=0.5)})
    coarse = build_stack(grid, {"aerial": [photo]}, {"aerial": ModalitySpec()})
    f = modality_array(fine, "aerial")
    assert f.sizes["y"] == 20 * grid.shape.y and f.sizes["x"] == 20 * grid.shape.x
    assert float(f.x[0]) - 0.25 == float(coarse.x[0]) - 5.0  # same anchor (left edge)
    blocks = f.values.reshape(3, grid.shape.y, 20, grid.shape.x, 20).mean(axis=(2, 4))
    # The coarse stack reads a JPEG overview level (DCT-scaled) and area-averages it; the fine one
    # reads full resolution. Both describe the same ground: they agree closely, not bit for bit.
    diff = np.abs(blocks - coarse["aerial"].values)
    assert np.median(diff) < 0.01 and np.percentile(diff, 99) < 0.06, np.percentile(diff, [50, 99])
    assert np.corrcoef(blocks.ravel(), coarse["aerial"].values.ravel())[0, 1] > 0.98


def test_osm_monaco_channels_and_geoparquet(tmp_path: Path) -> None:
    pbf = DATA / "osm" / "monaco.osm.pbf"
    item = local_item("monaco", "osm", {}, WHEN)
    item = item.__class__(**{**item.__dict__, "other_assets": {"pbf": str(pbf)}})
    grid = grid_from_aoi((7.418, 43.728, 7.428, 43.736), 10.0)
    res = load_osm([item], grid, ModalitySpec(), RasterioReader())
    assert res.bands[:4] == ["osm:buildings", "osm:roads_major", "osm:roads_minor", "osm:water"]
    layers = dict(zip(res.bands, res.data, strict=True))
    assert ((res.data >= 0) & (res.data <= 1)).all()
    # Building cover fraction x cell area == footprint area inside the grid (within 3 %).
    feats = osm_features(pbf, tuple(grid.geographic_extent.boundingbox))
    b = feats[feats["layer"] == "buildings"].to_crs(grid.crs.to_wkt())
    box = shapely.box(*grid.boundingbox)
    area = shapely.union_all(b.geometry.clip(box).values).area
    assert abs(layers["osm:buildings"].sum() * 100.0 - area) < 0.03 * area
    assert layers["osm:roads_minor"].sum() > 0 and layers["osm:roads_major"].sum() > 0
    out = write_geoparquet(feats, tmp_path / "monaco.parquet")
    back = gpd.read_parquet(out)
    assert len(back) == len(feats) and set(back["layer"]) >= {"buildings", "roads_minor"}
