"""A stack is bit-for-bit the same whatever the tile size, halo and chunking, for every modality
kind (continuous, categorical, SAR, elevation), with sources on other CRSs and grids.

Exact because: the warp uses the exact coordinate transformer (no GDAL approximation, whose
error depends on the window warped), nothing within a tolerance is pasted (odc-geo's 0.05 px
default snapped differently placed tiles differently), and tiles are read on core + halo.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from eo_fusion import api
from eo_fusion.config import ModalitySpec
from eo_fusion.grid import grid_from_aoi
from eo_fusion.stack import build_stack
from eo_fusion.testing.fake_reader import FakeReader

T0 = datetime(2021, 6, 1, 10, 30, tzinfo=UTC)
T1 = datetime(2021, 6, 13, 10, 30, tzinfo=UTC)
LONLAT = (14.55, 45.87)


def _grid(crs: str, res: float, shape: tuple[int, int], offset_px: float) -> GeoBox:
    cx, cy = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(*LONLAT)
    x0 = cx - (shape[1] / 2 - offset_px) * res
    y0 = cy + (shape[0] / 2 - offset_px) * res
    return GeoBox(shape, Affine(res, 0, x0, 0, -res, y0), crs)


GRID = grid_from_aoi((14.547, 45.8675, 14.553, 45.8725), 10, crs="EPSG:32633")


def _case():
    reader = FakeReader()

    def item(name, modality, keys, when, crs, res, n, offset_px, bands):
        return reader.item(name, modality, keys, when, _grid(crs, res, (n, n), offset_px), bands)

    items = {
        # continuous, on a lon/lat grid (~9 x 13 m pixels: bilinear)
        "ndvi": [item("ndvi", "ndvi", ["index:ndvi"], T0, "EPSG:4326", 1.2e-4, 100, 0.31, [3])],
        # continuous, 2.5 m in the grid's CRS: averaged
        "aerial": [
            item("rgb", "aerial", ["aerial:red", "aerial:green"], T0, "EPSG:32633", 2.5, 330,
                 0.11, [1, 3])
        ],
        # categorical, LAEA at 12 m: nearest
        "labels": [item("lab", "labels", ["label:landcover"], T0, "EPSG:3035", 12, 80, 0.27, [3])],
        # SAR, two dates, same CRS 0.04 px off the grid (was pasted, now interpolated)
        "s1-rtc": [
            item(f"s1-{i}", "s1-rtc", ["s1:VV", "s1:VH"], t, "EPSG:32633", 10.0, 90, 0.04 + i * 0.3,
                 [1, 2])
            for i, t in enumerate((T0, T1))
        ],
        # elevation, 30 m in the neighbouring UTM zone (upsampled bilinearly) + slope
        "dem": [item("dem", "dem", ["elevation:dem"], T0, "EPSG:32634", 30.0, 40, 0.13, [3])],
    }  # fmt: skip
    mods = {
        "ndvi": ModalitySpec(),
        # Co-registration estimates a shift per tile (by design a per-tile decision): off here.
        "aerial": ModalitySpec(options={"coreg": "off"}),
        "labels": ModalitySpec(),
        "s1-rtc": ModalitySpec(mode="timeseries", options={"coreg": "off"}),
        "dem": ModalitySpec(bands=["elevation:dem", "elevation:slope"]),
    }
    return reader, items, mods


def _lazy_and_whole(case, chunk: int, halo: int):  # type: ignore[no-untyped-def]
    """The lazy stack of ``case()`` in ``chunk`` px chunks with ``halo`` (computed) and the
    whole-grid eager build, with the case's modality specs."""
    reader, items, mods = case()
    whole = build_stack(GRID, items, mods, reader=reader)
    lazy = api.stack(items, GRID, mods, chunk_size=chunk, halo=halo, reader=reader)
    return lazy.compute(scheduler="sync"), whole, mods


@pytest.mark.parametrize(("chunk", "halo"), [(7, 0), (16, 3), (64, 5)])
def test_stack_is_bit_for_bit_independent_of_chunking(chunk: int, halo: int) -> None:
    lazy, whole, mods = _lazy_and_whole(_case, chunk, halo)
    for name in mods:
        a, b = lazy[name].values, whole[name].values
        assert np.isfinite(b).mean() > 0.9, name
        if name == "dem":
            # Slope differences neighbours: it needs a halo of >= 1 px (the default is 16);
            # the outer ring of the grid has no neighbour in any tiling.
            a, b = (a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1]) if halo else (a[:1], b[:1])
        np.testing.assert_array_equal(a, b, err_msg=f"{name}: chunk {chunk}, halo {halo}")
        if name != "dem":
            valid = lazy[f"{name}:valid"].values, whole[f"{name}:valid"].values
            np.testing.assert_array_equal(*valid, err_msg=f"{name}:valid")


def _downsampling_case():
    """Sources finer than the grid in other CRSs: average (continuous, SAR, elevation) and mode
    (categorical), transformed exactly (eo_fusion.sources.footprint)."""
    reader = FakeReader()

    def item(name, modality, keys, crs, res, n, offset_px, bands):
        return reader.item(name, modality, keys, T0, _grid(crs, res, (n, n), offset_px), bands)

    items = {
        # continuous, LAEA at 2.7 m: average (ramps and a texture)
        "aerial": [
            item("rgb", "aerial", ["aerial:red", "aerial:green"], "EPSG:3035", 2.7, 300, 0.21,
                 [1, 3])
        ],
        # categorical, lon/lat at ~3.3 x 4.4 m: mode
        "labels": [item("lab", "labels", ["label:landcover"], "EPSG:4326", 4e-5, 260, 0.37, [3])],
        # SAR 4 m in the neighbouring UTM zone: average in linear power
        "s1-rtc": [item("s1", "s1-rtc", ["s1:VV"], "EPSG:32634", 4.0, 200, 0.19, [3])],
        # elevation 3.5 m in LAEA: average (ratio >= 2)
        "dem": [item("dem", "dem", ["elevation:dem"], "EPSG:3035", 3.5, 230, 0.43, [1])],
    }  # fmt: skip
    mods = {
        "aerial": ModalitySpec(options={"coreg": "off"}),
        "labels": ModalitySpec(),
        "s1-rtc": ModalitySpec(options={"coreg": "off"}),
        "dem": ModalitySpec(bands=["elevation:dem"]),  # slopes need a halo: the test above
    }
    return reader, items, mods


@pytest.mark.parametrize(("chunk", "halo"), [(7, 0), (16, 3), (64, 5)])
def test_average_and_mode_across_crss_are_bit_for_bit_independent_of_chunking(
    chunk: int, halo: int
) -> None:
    lazy, whole, mods = _lazy_and_whole(_downsampling_case, chunk, halo)
    for name in mods:
        a, b = lazy[name].values, whole[name].values
        assert np.isfinite(b).mean() > 0.9, name
        np.testing.assert_array_equal(a, b, err_msg=f"{name}: chunk {chunk}, halo {halo}")
    # the rules that ran are the downsampling ones: the texture (whole numbers 0-16) averages to
    # fractions, and its mode stays a whole number
    tex = whole["aerial"].values[1]  # aerial:green
    assert (tex != np.round(tex)).mean() > 0.5
    lab = whole["labels"].values
    assert np.array_equal(lab[np.isfinite(lab)], np.round(lab[np.isfinite(lab)]))
