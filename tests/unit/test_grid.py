"""Grids from AOIs (anchoring, auto UTM, AOI formats) and tiling (exact cover, halos, sub-grids)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox

from eo_fusion.errors import GridError
from eo_fusion.grid import (
    aoi_geometry,
    aoi_mask,
    auto_crs,
    coarsen,
    grid_at_resolution,
    grid_from_aoi,
    make_tiles,
    refine,
    utm_crs_for,
)

SLOVENIA = (14.5515, 45.8640, 14.5640, 45.8725)


def _edges_on_anchor(gbox: GeoBox, res: float) -> bool:
    a = gbox.transform
    return (
        abs(a.c / res - round(a.c / res)) < 1e-9
        and abs(a.f / res - round(a.f / res)) < 1e-9
        and a.a == res
        and a.e == -res
    )


def test_auto_crs_is_utm_zone_of_centroid() -> None:
    assert utm_crs_for(14.55, 45.87).epsg == 32633
    assert utm_crs_for(-123.07, 44.05).epsg == 32610
    assert utm_crs_for(151.2, -33.9).epsg == 32756
    g = grid_from_aoi(SLOVENIA, 10)
    assert g.crs.epsg == 32633
    assert _edges_on_anchor(g, 10)


def test_grid_covers_aoi_and_is_anchored() -> None:
    g = grid_from_aoi(SLOVENIA, 10)
    aoi = aoi_geometry(SLOVENIA).to_crs(g.crs)
    assert g.extent.contains(aoi)
    # Tight: shrinking by one pixel on any side would lose part of the AOI.
    minx, miny, maxx, maxy = aoi.boundingbox
    assert g.boundingbox.left > minx - 10 and g.boundingbox.right < maxx + 10
    assert g.boundingbox.bottom > miny - 10 and g.boundingbox.top < maxy + 10


def test_separate_runs_align_pixel_for_pixel() -> None:
    a = grid_from_aoi(SLOVENIA, 10)
    shifted = (SLOVENIA[0] + 0.00123, SLOVENIA[1] + 0.00077, SLOVENIA[2] + 0.002, SLOVENIA[3])
    b = grid_from_aoi(shifted, 10)
    off_x = (b.transform.c - a.transform.c) / 10
    off_y = (b.transform.f - a.transform.f) / 10
    assert off_x == round(off_x) and off_y == round(off_y)
    assert off_x != 0  # the AOIs differ, the grids are offset by whole pixels


@pytest.mark.parametrize("fmt", ["bbox", "wkt", "geojson", "geojson_file", "feature_collection"])
def test_aoi_formats_give_the_same_grid(fmt: str, tmp_path) -> None:
    # The AOI given in EPSG:3035 (a projected CRS) in several spellings.
    geom = aoi_geometry(SLOVENIA).to_crs("EPSG:3035")
    minx, miny, maxx, maxy = geom.boundingbox
    box = aoi_geometry((minx, miny, maxx, maxy), "EPSG:3035")
    gj = box.json
    aoi = {
        "bbox": (minx, miny, maxx, maxy),
        "wkt": box.wkt,
        "geojson": gj,
        "geojson_file": None,
        "feature_collection": {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": gj, "properties": {}}],
        },
    }[fmt]
    if fmt == "geojson_file":
        aoi = tmp_path / "aoi.geojson"
        aoi.write_text(json.dumps(gj))
    g = grid_from_aoi(aoi, 20, aoi_crs="EPSG:3035")
    ref = grid_from_aoi((minx, miny, maxx, maxy), 20, aoi_crs="EPSG:3035")
    assert g == ref
    assert g.crs.epsg == 32633
    assert _edges_on_anchor(g, 20)


def test_explicit_crs_in_feet() -> None:
    g = grid_from_aoi((-74.01, 40.70, -73.99, 40.72), 30, crs="EPSG:2263")
    assert g.crs.epsg == 2263 and _edges_on_anchor(g, 30)


def test_bad_inputs_raise_grid_errors() -> None:
    with pytest.raises(GridError, match="empty or inverted"):
        grid_from_aoi((1, 1, 0, 2), 10)
    with pytest.raises(GridError, match="not positive"):
        grid_from_aoi(SLOVENIA, 0)
    with pytest.raises(GridError, match="not a lon/lat"):
        grid_from_aoi((465000, 5079000, 466000, 5080000), 10)  # metres given as lon/lat
    with pytest.raises(GridError, match="integer multiple"):
        grid_at_resolution(grid_from_aoi(SLOVENIA, 10), 3.0)


def test_aoi_mask_marks_pixels_inside_polygon() -> None:
    tri = {"type": "Polygon", "coordinates": [[[0, 0], [100, 0], [0, 103], [0, 0]]]}
    g = grid_from_aoi((0, 0, 100, 100), 10, crs="EPSG:32633", aoi_crs="EPSG:32633")
    m = aoi_mask(g, tri, aoi_crs="EPSG:32633")
    # Pixel centres (5+10i, 95-10j) inside the triangle x/100 + y/103 < 1.
    x, y = np.meshgrid(np.arange(5, 100, 10), np.arange(95, 0, -10))
    np.testing.assert_array_equal(m, x / 100 + y / 103 < 1)


def test_sub_grids_share_the_anchor() -> None:
    g = grid_from_aoi(SLOVENIA, 10)
    fine = refine(g, 20)
    assert fine.resolution.x == 0.5
    assert fine.transform.c == g.transform.c and fine.transform.f == g.transform.f
    assert fine.shape.yx == (g.shape.y * 20, g.shape.x * 20)
    assert grid_at_resolution(g, 0.5) == fine
    tile = make_tiles(g, 60)[0].core
    assert coarsen(tile, 3).resolution.x == 30
    assert grid_at_resolution(tile, 30) == coarsen(tile, 3)
    with pytest.raises(GridError):
        coarsen(g, 7)  # 96x99 pixels are not a multiple of 7


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 200),
    w=st.integers(1, 200),
    tile=st.integers(9, 128),
    halo=st.integers(0, 20),
    x0=st.integers(-1000, 1000),
)
def test_tiles_cover_grid_exactly_once(h: int, w: int, tile: int, halo: int, x0: int) -> None:
    from affine import Affine

    g = GeoBox((h, w), Affine(10, 0, x0 * 10, 0, -10, 5_000_000), "EPSG:32633")
    tiles = make_tiles(g, tile, halo)
    count = np.zeros((h, w), dtype=int)
    for t in tiles:
        sy, sx = t.core_in_grid
        count[sy, sx] += 1
        assert g[sy, sx] == t.core
        assert t.padded[t.core_in_padded] == t.core
        assert t.padded.shape.yx == (t.core.shape.y + 2 * halo, t.core.shape.x + 2 * halo)
        assert t.id == f"r{t.row:03d}_c{t.col:03d}"
    assert (count == 1).all()
    assert len({t.id for t in tiles}) == len(tiles)


# --- crs: auto on both sides of a zone border -----------------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat", "zone"),
    [
        (11.99, 46.0, 32),  # west of the 33/32 border at 12 E
        (12.01, 46.0, 33),  # east of it
        (5.3, 60.4, 32),  # Bergen: zone 32 is widened over south-western Norway (not 31)
        (2.9, 60.4, 31),  # west of the widened zone
        (15.6, 78.2, 33),  # Svalbard: odd zones only (33, not 34)
        (-0.01, 51.5, 30),  # Greenwich: just west of the zone 30/31 border
        (0.01, 51.5, 31),
    ],
)
def test_auto_crs_is_the_zone_containing_the_centroid(lon, lat, zone) -> None:
    assert utm_crs_for(lon, lat).epsg == 32600 + zone
    aoi = (lon - 0.004, lat - 0.003, lon + 0.004, lat + 0.003)
    assert grid_from_aoi(aoi, 10).crs.epsg == 32600 + zone


def test_auto_crs_keeps_the_inputs_shared_crs_across_a_zone_border() -> None:
    # An AOI just east of 12 E (zone 33) covered by Sentinel-2 tiles of zone 32 (MGRS tiles
    # overlap the border): the grid keeps the data's own zone, so nothing is resampled.
    aoi = (12.01, 46.0, 12.03, 46.02)
    g = grid_from_aoi(aoi, 10, input_crs=["EPSG:32632", "EPSG:32632"])
    assert g.crs.epsg == 32632 and _edges_on_anchor(g, 10)
    assert auto_crs(aoi_geometry(aoi), ["EPSG:32632+3855"]).epsg == 32632  # horizontal part
    # Inputs in two zones (or none known): the zone of the AOI centroid.
    assert grid_from_aoi(aoi, 10, input_crs=["EPSG:32632", "EPSG:32633"]).crs.epsg == 32633
    assert grid_from_aoi(aoi, 10, input_crs=[]).crs.epsg == 32633
    west = (11.97, 46.0, 11.99, 46.02)
    assert grid_from_aoi(west, 10, input_crs=["EPSG:32632", "EPSG:4326"]).crs.epsg == 32632
    assert grid_from_aoi(west, 10, input_crs=["EPSG:32633"]).crs.epsg == 32633


def test_compound_grid_crs_uses_the_horizontal_part() -> None:
    g = grid_from_aoi((14.54, 45.86, 14.56, 45.88), 10, crs="EPSG:32633+3855")
    assert g.crs.epsg == 32633 and not g.crs.proj.is_compound
    with pytest.raises(GridError):
        grid_from_aoi((14.54, 45.86, 14.56, 45.88), 10, crs="EPSG:99999999")


def test_auto_crs_ignores_shared_inputs_that_are_not_in_metres() -> None:
    aoi = aoi_geometry((12.01, 46.0, 12.03, 46.02))
    assert auto_crs(aoi, ["EPSG:4326"]).epsg == 32633  # a 10 "m" grid in degrees is nonsense
    assert auto_crs(aoi, ["EPSG:3035"]).epsg == 3035  # LAEA Europe is in metres
    assert auto_crs(aoi_geometry((-74.0, 40.7, -73.99, 40.71)), ["EPSG:2263"]).epsg == 32618
