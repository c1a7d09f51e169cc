"""The vertical datum of elevation reaches the outputs: stack attrs, Zarr, COG, product STAC."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pyproj
import rasterio
from rio_cogeo.cogeo import cog_validate

from eo_fusion.catalogs.local import local_item
from eo_fusion.catalogs.normalize import VERTICAL_DATUM_PROPERTY
from eo_fusion.config import ModalitySpec
from eo_fusion.grid import grid_from_aoi, vertical_datum
from eo_fusion.pipeline.assemble import _vertical_datums
from eo_fusion.sources.elevation import compound_crs, vertical_datum_of
from eo_fusion.stack import build_stack
from eo_fusion.stack_io import open_stack_zarr, write_modality_cogs, write_stack_zarr

ROOT = Path(__file__).resolve().parents[2]
DEM = ROOT / "catalogs" / "sample" / "data" / "slovenia" / "DEM_slovenia_10m.tif"
GRID = grid_from_aoi(
    (465_300, 5_079_400, 465_900, 5_080_000), 10, crs="EPSG:32633", aoi_crs="EPSG:32633"
)
WHEN = datetime(2016, 1, 1, tzinfo=UTC)


def _dem(item_id: str = "cop-dem", datum: str | None = "EGM2008", path: Path = DEM):
    props = {VERTICAL_DATUM_PROPERTY: datum} if datum else {}
    return local_item(item_id, "dem", {"elevation:dem": path}, WHEN, properties=props)


def test_datum_from_the_property_or_the_compound_crs_and_mixed_is_said(caplog) -> None:
    assert vertical_datum_of([_dem()]) == "EGM2008"
    assert vertical_datum_of([_dem(datum=None)]) is None  # the Slovenia file says nothing
    compound = _dem(datum=None)
    asset = compound.bands["elevation:dem"]
    compound.bands["elevation:dem"] = replace(asset, crs="EPSG:32633+3855")
    assert vertical_datum_of([compound]) == "EGM2008"  # "EGM2008 height" of the CRS
    with caplog.at_level(logging.WARNING):
        got = vertical_datum_of([_dem("a"), _dem("b", datum="EGM96")])
    assert got == "mixed: EGM2008, EGM96"
    assert "different vertical datums" in caplog.text
    assert compound_crs("EPSG:32633", got) is None  # no single vertical CRS for a mix
    assert compound_crs("EPSG:32633", "EGM2008").sub_crs_list[1].to_epsg() == 3855


def test_stack_zarr_and_cog_carry_the_datum(tmp_path: Path) -> None:
    mods = {"dem": ModalitySpec(bands=["elevation:dem", "elevation:slope"])}
    ds = build_stack(GRID, {"dem": [_dem()]}, mods)
    assert ds["dem"].attrs["vertical_datum"] == "EGM2008"
    write_stack_zarr(ds, tmp_path / "stack.zarr", "t0")
    assert (
        open_stack_zarr(tmp_path / "stack.zarr", "t0")["dem"].attrs["vertical_datum"] == "EGM2008"
    )
    (cog,) = write_modality_cogs(ds, tmp_path / "cog", "t0")
    assert cog_validate(str(cog), strict=True)[0]
    with rasterio.open(cog) as f:
        assert f.tags()["vertical_datum"] == "EGM2008"
        crs = pyproj.CRS.from_wkt(f.crs.to_wkt())
    assert crs.is_compound and crs.sub_crs_list[0].to_epsg() == 32633
    assert vertical_datum(crs) == "EGM2008 height"
    # Round trip: the written COG, catalogued again, says its datum through its CRS.
    assert vertical_datum_of([_dem("again", datum=None, path=cog)]) == "EGM2008"


def test_unknown_datum_writes_a_plain_crs(tmp_path: Path) -> None:
    ds = build_stack(GRID, {"dem": [_dem(datum=None)]}, {"dem": ModalitySpec()})
    assert "vertical_datum" not in ds["dem"].attrs
    (cog,) = write_modality_cogs(ds, tmp_path / "cog", "t0")
    with rasterio.open(cog) as f:
        assert "vertical_datum" not in f.tags()
        assert f.crs.to_epsg() == 32633


def test_product_stac_names_the_datum_of_each_elevation_modality() -> None:
    s2 = local_item("s2", "s2-l1c", {"s2:B04": DEM}, WHEN)
    tasks = [
        SimpleNamespace(items={"dem": (_dem("a"),), "s2-l1c": (s2,)}),
        SimpleNamespace(items={"dem": (_dem("b"),), "dsm": (_dem("c", datum=None),)}),
    ]
    assert _vertical_datums(SimpleNamespace(tasks=tasks)) == {"vertical_datum": {"dem": "EGM2008"}}
    assert _vertical_datums(SimpleNamespace(tasks=tasks[1:][:0])) == {}
