"""Landsat Collection 2 Level-2: provider item layouts, scale/offset and QA_PIXEL bits.

The items are hand-written from the documented layouts (tests/fixtures/stac/synthetic_providers,
see its README); the rasters are small synthetic GeoTIFFs whose DNs are chosen so the expected
physical values are known exactly from the USGS encodings.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox

from eo_fusion.bands import REGISTRY, get_band, landsat_sensor
from eo_fusion.catalogs.local import local_item
from eo_fusion.catalogs.normalize import guess_modality, normalize_item
from eo_fusion.config import ModalitySpec, modality_spec
from eo_fusion.errors import BandError, ConfigError
from eo_fusion.models.spectral import native_range
from eo_fusion.sources.landsat import QA_BITS, load_landsat, qa_clear
from eo_fusion.sources.reader import RasterioReader

FIX = Path(__file__).resolve().parents[1] / "fixtures/stac/synthetic_providers"
GRID = GeoBox((20, 20), Affine(30, 0, 400_000, 0, -30, 5_000_600), "EPSG:32633")
GDAL = RasterioReader()


def _item(name: str) -> dict:
    return json.loads((FIX / f"{name}.json").read_text())


def test_earth_search_oli_layout():
    f = _item("earth-search-v1__landsat-c2-l2")
    n = normalize_item(f)
    assert n.modality == "landsat-c2-l2"
    assert set(n.bands) == {f"landsat:OLI_B{i}" for i in (1, 2, 3, 4, 5, 6, 7, 10)} | {
        "landsat:QA_PIXEL"
    }
    red = n.bands["landsat:OLI_B4"]
    assert red.asset_key == "red" and red.href.endswith("_SR_B4.TIF")
    assert red.spec.scale == pytest.approx(2.75e-5) and red.spec.offset == pytest.approx(-0.2)
    assert red.spec.nodata == 0 and red.crs == "EPSG:32633"
    st = n.bands["landsat:OLI_B10"]
    assert st.asset_key == "lwir11" and st.spec.units == "K" and st.spec.kind == "temperature"
    assert st.spec.scale == pytest.approx(0.00341802) and st.spec.offset == pytest.approx(149.0)
    # qa_pixel carries only cloud/snow roles, yet it is the mask: it must be a band.
    assert n.bands["landsat:QA_PIXEL"].spec.nodata == 1
    # ST_QA ("qa") is the temperature uncertainty, not QA_PIXEL: reported as unplaced.
    assert "qa" in n.unplaced_assets and "atran" in n.unplaced_assets
    assert "qa_radsat" in n.other_assets


def test_planetary_computer_etm_layout():
    n = normalize_item(_item("planetary-computer__landsat-c2-l2"))
    assert n.modality == "landsat-c2-l2"
    # ETM+ band 3 is red and band 4 NIR; band 6 the thermal band.
    assert n.bands["landsat:ETM_B3"].asset_key == "red"
    assert n.bands["landsat:ETM_B4"].asset_key == "nir08"
    assert n.bands["landsat:ETM_B6"].asset_key == "lwir"
    assert not any(k.startswith("landsat:OLI") for k in n.bands)
    assert n.bands["landsat:ETM_B1"].spec.offset == pytest.approx(-0.2)
    assert {"tilejson", "rendered_preview", "cloud_qa"} <= set(n.other_assets)


@pytest.mark.parametrize(
    ("platform", "instruments", "sensor", "red"),
    [
        ("landsat-5", ["tm"], "TM", "landsat:TM_B3"),
        ("landsat-4", ["tm"], "TM", "landsat:TM_B3"),
        ("landsat-7", ["etm"], "ETM", "landsat:ETM_B3"),
        ("landsat-9", ["oli", "tirs"], "OLI", "landsat:OLI_B4"),
        (None, ["oli", "tirs"], "OLI", "landsat:OLI_B4"),
    ],
)
def test_sensor_decides_band_keys(platform, instruments, sensor, red):
    f = copy.deepcopy(_item("earth-search-v1__landsat-c2-l2"))
    if platform is None:
        f["properties"].pop("platform")
    else:
        f["properties"]["platform"] = platform
    f["properties"]["instruments"] = instruments
    for a in f["assets"].values():  # band names of another sensor must not decide
        a.pop("eo:bands", None)
    assert landsat_sensor(f["properties"], f["id"]) == sensor
    assert normalize_item(f).bands[red].asset_key == "red"


def test_modality_from_id_without_collection():
    f = copy.deepcopy(_item("planetary-computer__landsat-c2-l2"))
    f.pop("collection")
    assert guess_modality(pystac.Item.from_dict(f)) == "landsat-c2-l2"


def test_wavelengths_place_in_the_spectral_model():
    # USGS band edges: TM B4 760-900 nm is a broad NIR, OLI B5 850-880 nm a narrow one.
    assert native_range(get_band("landsat:TM_B4")) == "nir_broad"
    assert native_range(get_band("landsat:OLI_B5")) == "nir_narrow"
    assert native_range(get_band("landsat:OLI_B1")) == "coastal"
    assert native_range(get_band("landsat:ETM_B7")) == "swir_2"
    assert get_band("landsat:OLI_B4").wavelength_nm == pytest.approx(655.0)
    # Thermal bands have no optical range: no wavelength, so the model refuses them by name.
    assert REGISTRY["landsat:OLI_B10"].wavelength_nm is None


@pytest.mark.parametrize(
    ("flags", "value", "clear"),
    [
        ((), 0b0000_0000_0100_0000, True),  # clear bit only (21824 is the usual clear value)
        ((), 1, False),  # fill is always masked
        (("cloud",), 1 << 3, False),
        (("cloud",), 1 << 4, True),  # shadow not asked for
        (("cloud_shadow",), 1 << 4, False),
        (("dilated_cloud",), 1 << 1, False),
        (("snow",), 1 << 5, False),
        (("cirrus",), 1 << 2, False),
        (("cloud", "cloud_shadow"), 21824, True),  # real clear-land value: bits 6, 8, 10, 12, 14
        (("cloud", "cloud_shadow"), 22280, False),  # real high-confidence cloud: bits 3, 8, 9, ...
    ],
)
def test_qa_bits(flags, value, clear):
    assert QA_BITS == {
        "fill": 0, "dilated_cloud": 1, "cirrus": 2, "cloud": 3,
        "cloud_shadow": 4, "snow": 5, "clear": 6, "water": 7,
    }  # fmt: skip
    assert bool(qa_clear(np.array([float(value)]), flags)[0]) is clear


def _write(path: Path, arr: np.ndarray, nodata=None) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", count=1, height=arr.shape[0], width=arr.shape[1],
        dtype=arr.dtype, crs=GRID.crs.to_wkt(), transform=GRID.transform, nodata=nodata,
    ) as ds:  # fmt: skip
        ds.write(arr, 1)
    return path


def _scene(tmp: Path, day: int, dn: int, qa_rows: dict[int, int], st_dn: int = 0):
    red = np.full((20, 20), dn, np.uint16)
    red[19, 19] = 0  # fill DN
    qa = np.full((20, 20), 21824, np.uint16)  # clear land
    for row, bits in qa_rows.items():
        qa[row] = bits
    qa[19, 19] = 1  # fill
    files = {
        "landsat:OLI_B4": _write(tmp / f"SR_B4_{day}.tif", red, nodata=0),
        "landsat:QA_PIXEL": _write(tmp / f"QA_{day}.tif", qa),
    }
    if st_dn:
        files["landsat:OLI_B10"] = _write(
            tmp / f"ST_B10_{day}.tif", np.full((20, 20), st_dn, np.uint16)
        )
    when = datetime(2023, 7, day, 9, 47, tzinfo=UTC)
    props = {"platform": "landsat-8"}
    return local_item(f"LC08_{day}", "landsat-c2-l2", files, when, properties=props)


def test_scale_offset_and_qa_mask_on_a_raster(tmp_path: Path):
    cloud, shadow, snow = 22280, 1 << 4 | 1 << 6, 1 << 5
    items = [_scene(tmp_path, 10, 10_000, {0: cloud, 1: shadow, 2: snow}, st_dn=44_000)]
    spec = modality_spec("landsat-c2-l2", {"bands": ["landsat:OLI_B4", "landsat:OLI_B10"]})
    res = load_landsat(items, GRID, spec, GDAL)
    red, st = res.data
    # 10000 * 2.75e-5 - 0.2 = 0.075; 44000 * 0.00341802 + 149 = 299.39288 K
    np.testing.assert_allclose(red[5:19, :], 0.075, rtol=1e-6)
    np.testing.assert_allclose(st[5:19, :], 44_000 * 0.00341802 + 149.0, rtol=1e-6)
    assert res.units == ["reflectance", "K"]
    assert np.isnan(red[0]).all() and np.isnan(red[1]).all()  # cloud and shadow masked
    assert np.isfinite(red[2]).all()  # snow kept by default
    assert np.isnan(red[19, 19])  # fill
    assert res.attrs["cloud_mask"] == ["qa_pixel"]
    # Snow on request; mask: [] keeps clouds (fill only).
    with_snow = modality_spec(
        "landsat-c2-l2", {"bands": ["landsat:OLI_B4"], "options": {"mask": ["snow"]}}
    )
    r2 = load_landsat(items, GRID, with_snow, GDAL).data[0]
    assert np.isnan(r2[2]).all() and np.isfinite(r2[0]).all()


def test_composite_median_and_timeseries(tmp_path: Path):
    cloud = 1 << 3
    items = [
        _scene(tmp_path, 1, 10_000, {r: cloud for r in range(0, 5)}),
        _scene(tmp_path, 17, 12_000, {r: cloud for r in range(5, 10)}),
        _scene(tmp_path, 25, 14_000, {}),
    ]
    comp = load_landsat(items, GRID, modality_spec("landsat-c2-l2"), GDAL)
    assert comp.bands == ["landsat:OLI_B4"] and comp.times is None
    # rows 0-4 clear on days 17, 25: median(0.13, 0.185) = 0.1575
    np.testing.assert_allclose(comp.data[0, 2, 3], (0.13 + 0.185) / 2, rtol=1e-6)
    np.testing.assert_allclose(comp.data[0, 15, 3], 0.13, rtol=1e-6)  # three clear: median
    ts = load_landsat(
        items,
        GRID,
        modality_spec("landsat-c2-l2", {"mode": "timeseries", "aggregate": "monthly"}),
        GDAL,
    )
    assert ts.data.shape == (1, 1, 20, 20) and ts.times[0].day == 1
    assert ts.attrs["aggregate"].startswith("monthly")


def test_options_are_typed():
    with pytest.raises(ConfigError, match="mask"):
        modality_spec("landsat-c2-l2", {"options": {"mask": ["clouds"]}})
    with pytest.raises(BandError, match="landsat"):
        load_landsat([], GRID, ModalitySpec(bands=["s2:B04"]), GDAL)


def test_registry_wires_the_reader_and_options():
    from eo_fusion.modalities import coreg_role, get_modality
    from eo_fusion.stack import loader_for

    assert loader_for("landsat-c2-l2") is load_landsat
    assert coreg_role("landsat-c2-l2") == "optical"
    mdef = get_modality("landsat-c2-l2")
    assert mdef.cloud_cover and mdef.aggregates
    assert modality_spec("landsat-c2-l2", {"max_cloud": 20}).max_cloud == 20
