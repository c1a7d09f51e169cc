"""``eo-fusion catalog build`` on folders of ordinary files, then ``eo-fusion stack`` (issue 11).

Real pixels from ``catalogs/sample/data`` (see its README and ATTRIBUTION): a BigEarthNet
Sentinel-2 L2A patch as 12 per-band files and its Sentinel-1 VV/VH pair in dB (same 10 m grid,
same day), the Slovenia 13-band L1C file, NAIP R, G, B; the DEMs are the Slovenia DEM (real,
warped to EPSG:4326 for the geographic case) and, for the BigEarthNet place, which has none, a
synthetic terrain on the patch's grid (labelled as such below).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import yaml
from rasterio.warp import Resampling, calculate_default_transform, reproject

from eo_fusion.catalogs import open_catalog
from eo_fusion.cli import main
from eo_fusion.stack import modality_array
from eo_fusion.stack_io import open_stack_zarr

DATA = Path(__file__).resolve().parents[2] / "catalogs" / "sample" / "data"
BEN = "S2A_MSIL2A_20170613T101031_87_48"
BEN_S1 = "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def _items(root: Path) -> dict[str, pystac.Item]:
    cat = pystac.Catalog.from_file(str(root / "catalog.json"))
    return {i.id: i for i in cat.get_items(recursive=True)}


def _synthetic_dem_on(grid_file: Path, out: Path) -> Path:
    """A smooth synthetic terrain (metres) on ``grid_file``'s grid: BigEarthNet has no DEM."""
    with rasterio.open(grid_file) as src:
        profile = src.profile | {"dtype": "float32", "count": 1, "nodata": -32767.0}
        yy, xx = np.mgrid[0 : src.height, 0 : src.width]
    dem = (210.0 + 0.8 * xx + 0.3 * yy + 5 * np.sin(xx / 9.0)).astype("float32")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(dem, 1)
        dst.update_tags(1, UNITS="metre")
    return out


@pytest.fixture
def one_place(tmp_path: Path) -> Path:
    """S2 per-band files, S1 VV/VH and a DEM of one place, in a folder, as a user has them."""
    folder = tmp_path / "inputs"
    s2 = folder / "s2" / BEN
    s2.mkdir(parents=True)
    for b in S2_BANDS:
        shutil.copy(DATA / "bigearthnet" / "s2" / BEN / f"{BEN}_{b}.tif", s2)
    shutil.copy(DATA / "bigearthnet" / "s2" / BEN / f"{BEN}_labels_metadata.json", s2)
    s1 = folder / "s1"
    s1.mkdir()
    for p in ("VV", "VH"):
        shutil.copy(DATA / "bigearthnet" / "s1" / BEN_S1 / f"{BEN_S1}_{p}.tif", s1)
    _synthetic_dem_on(s2 / f"{BEN}_B04.tif", folder / "dem_33UUP_87_48.tif")
    return folder


def test_one_folder_one_command_then_stack(one_place: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "stac"
    assert main(["catalog", "build", str(one_place), "--out", str(out)]) == 0
    items = _items(out)
    assert {i.collection_id for i in items.values()} == {"s2-l2a", "s1-grd", "dem"}
    s2, s1, dem = items[BEN], items[BEN_S1], items["dem_33UUP_87_48"]
    # One multi-asset item per acquisition; per-band grids kept (10, 20 and 60 m).
    assert sorted(s2.assets) == sorted(S2_BANDS)
    assert [a.extra_fields["gsd"] for a in (s2.assets["B04"], s2.assets["B05"], s2.assets["B01"])
            ] == [10.0, 20.0, 60.0]  # fmt: skip
    assert str(s2.datetime) == "2017-06-13 10:10:31+00:00"
    assert sorted(s1.assets) == ["VH", "VV"] and s1.properties["sar:polarizations"] == ["VH", "VV"]
    assert s1.assets["VV"].extra_fields["raster:bands"][0]["unit"] == "dB"  # negative values
    assert dem.properties["start_datetime"].startswith("1970")  # static layer: open span

    job = {
        "name": "one-place",
        "catalog": str(out),
        "aoi": {"bbox": list(_bounds(one_place / "s2" / BEN / f"{BEN}_B04.tif")),
                "crs": "EPSG:32633"},
        "time": {"start": "2017-06-01", "end": "2017-06-30"},
        "grid": {"resolution": 10, "tile_size": 120, "halo": 0},
        # coreg off: the test compares pixels with the files (the S1 patch may be shifted by
        # co-registration, which is not what is tested here).
        "modalities": {"s2-l2a": {"mode": "composite"},
                       "s1-grd": {"mode": "composite", "options": {"coreg": "off"}},
                       "dem": {}},
    }  # fmt: skip
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    monkeypatch.setenv("EO_FUSION_DATA_ROOTS", str(one_place))
    assert main(["stack", str(path), "--out", str(tmp_path / "stack")]) == 0
    ds = open_stack_zarr(tmp_path / "stack" / "stack.zarr", "r000_c000")
    bands = {m: [str(b) for b in modality_array(ds, m)["band"].values]
             for m in ("s2-l2a", "s1-grd", "dem")}  # fmt: skip
    assert bands == {"s2-l2a": [f"s2:{b}" for b in S2_BANDS], "s1-grd": ["s1:VV", "s1:VH"],
                     "dem": ["elevation:dem", "elevation:slope", "elevation:aspect"]}  # fmt: skip
    _check_values(ds, one_place)


def _bounds(path: Path) -> tuple[float, float, float, float]:
    with rasterio.open(path) as ds:
        return tuple(ds.bounds)  # type: ignore[return-value]


def _band(ds, key: str) -> np.ndarray:
    for name in ds.data_vars:
        if str(name).endswith(":valid"):
            continue
        da = modality_array(ds, str(name))
        if "band" in da.dims and key in [str(b) for b in da["band"].values]:
            arr = da.sel(band=key)
            return np.asarray(arr.isel(time=0) if "time" in arr.dims else arr)
    raise KeyError(key)


def _check_values(ds, folder: Path) -> None:
    """Same grid as the files: every band equals its file in physical units."""
    with rasterio.open(folder / "s2" / BEN / f"{BEN}_B04.tif") as f:
        b04 = f.read(1) * 1e-4  # baseline 02.05 (2017): no offset
    with rasterio.open(folder / "s1" / f"{BEN_S1}_VV.tif") as f:
        vv = f.read(1)
    with rasterio.open(folder / "dem_33UUP_87_48.tif") as f:
        dem = f.read(1)
    np.testing.assert_allclose(_band(ds, "s2:B04"), b04, rtol=0, atol=1e-6)
    np.testing.assert_allclose(_band(ds, "s1:VV"), vv, rtol=0, atol=1e-4)
    np.testing.assert_allclose(_band(ds, "elevation:dem"), dem, rtol=0, atol=1e-4)


def _geographic_dem(out: Path) -> Path:
    """The real Slovenia DEM (EPSG:32633, 10 m) warped to EPSG:4326, as SRTM tiles come."""
    with rasterio.open(DATA / "slovenia" / "DEM_slovenia_10m.tif") as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height,
                                              *src.bounds)  # fmt: skip
        prof = src.profile | {"crs": "EPSG:4326", "transform": t, "width": w, "height": h,
                              "nodata": -9999.0}  # fmt: skip
        with rasterio.open(out, "w", **prof) as dst:
            reproject(rasterio.band(src, 1), rasterio.band(dst, 1), resampling=Resampling.bilinear,
                      dst_nodata=-9999.0)  # fmt: skip
    return out


def _aerial_rgb(out: Path) -> Path:
    """NAIP R, G, B (an aerial RGB tile: 3 bands uint8, photometric RGB, no descriptions)."""
    with rasterio.open(DATA / "naip" / "m_4709963_se_14_1_20160816.tif") as src:
        prof = src.profile | {"count": 3, "photometric": "RGB"}
        with rasterio.open(out, "w", **prof) as dst:
            dst.write(src.read([1, 2, 3]))
    return out


def _s1_vv_tagged(out: Path) -> Path:
    """A Sentinel-1 VV file that says what it is only in its metadata (description, units)."""
    shutil.copy(DATA / "bigearthnet" / "s1" / BEN_S1 / f"{BEN_S1}_VV.tif", out)
    with rasterio.open(out, "r+") as ds:
        ds.set_band_description(1, "VV")
        ds.update_tags(1, UNITS="dB")
        ds.update_tags(ACQUISITION_DATETIME="2017-06-13T16:50:43Z")
    return out


def test_mixed_sensors_single_and_multi_band(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    _geographic_dem(folder / "slovenia_srtm.tif")
    _aerial_rgb(folder / "ortho_2016-08-16.tif")
    _s1_vv_tagged(folder / "scene_backscatter.tif")
    shutil.copy(DATA / "slovenia" / "S2_L1C_TOA_2015-07-11_13bands.tif", folder)
    out = tmp_path / "stac"
    assert main(["catalog", "build", str(folder), "--out", str(out)]) == 0
    assert "time of day unknown" not in capsys.readouterr().err  # day spans are not warnings
    cat = open_catalog(out, roots=[folder])
    s1 = cat.search("s1-grd").normalized[0]
    assert list(s1.bands) == ["s1:VV"] and s1.bands["s1:VV"].spec.units == "dB"
    assert s1.datetime.isoformat() == "2017-06-13T16:50:43+00:00"  # from the tag
    rgb = cat.search("aerial").normalized[0]
    assert {k: b.band_index for k, b in rgb.bands.items()} == {
        "aerial:red": 1, "aerial:green": 2, "aerial:blue": 3}  # fmt: skip
    s2 = cat.search("s2-l1c").normalized[0]
    assert [k for k, _ in sorted(s2.bands.items(), key=lambda kv: kv[1].band_index)] == [
        f"s2:{b}" for b in ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                            "B09", "B10", "B11", "B12")]  # fmt: skip
    assert s2.bands["s2:B04"].spec.scale == 1.0  # float reflectance 0-1
    dem_item = _items(out)["slovenia_srtm"]
    asset = dem_item.assets["data"].extra_fields
    # Degrees in proj:transform (exact grid), metres on the ground for gsd.
    assert asset["proj:code"] == "EPSG:4326" and asset["eo_fusion:crs_units"] == "degree"
    assert abs(asset["proj:transform"][0]) < 1e-3 and 7.0 < asset["gsd"] < 14.0
    dem = cat.search("dem").normalized[0].bands["elevation:dem"]
    assert 7.0 < dem.spec.resolution_m < 14.0
    _stack_slovenia(out, folder, tmp_path, monkeypatch)


def _stack_slovenia(out: Path, folder: Path, tmp_path: Path, monkeypatch) -> None:
    """The geographic DEM and the L1C file of the same place stack onto the UTM grid."""
    job = {
        "name": "mixed",
        "catalog": str(out),
        "aoi": {"geojson": str(DATA / "slovenia" / "bbox.geojson")},
        "time": {"start": "2015-07-01", "end": "2015-07-31"},
        "grid": {"resolution": 10, "crs": "EPSG:32633", "tile_size": 128, "halo": 0},
        "modalities": {"s2-l1c": {"mode": "composite", "options": {"cloud_threshold": 1.0}},
                       "dem": {}},
    }  # fmt: skip
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(job))
    monkeypatch.setenv("EO_FUSION_DATA_ROOTS", str(folder))
    assert main(["stack", str(path), "--out", str(tmp_path / "mixed-stack")]) == 0
    ds = open_stack_zarr(tmp_path / "mixed-stack" / "stack.zarr", "r000_c000")
    elev = _band(ds, "elevation:dem")
    with rasterio.open(DATA / "slovenia" / "DEM_slovenia_10m.tif") as f:
        lo, hi = float(f.read(1).min()), float(f.read(1).max())
    valid = np.isfinite(elev)
    assert valid.mean() > 0.8 and lo - 1 <= np.nanmin(elev) and np.nanmax(elev) <= hi + 1
    assert np.isfinite(_band(ds, "s2:B04")).mean() > 0.8


def test_second_build_adds_to_the_catalog(one_place: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "stac"
    assert main(["catalog", "build", str(one_place / "s2"), "--out", str(out)]) == 0
    assert main(["catalog", "build", str(one_place / "s1"), "--out", str(out)]) == 0
    assert {i.collection_id for i in _items(out).values()} == {"s2-l2a", "s1-grd"}
    assert len(open_catalog(out / "items.parquet", roots=[one_place]).search().items) == 2
    capsys.readouterr()
    assert main(["catalog", "build", str(one_place / "s2"), "--out", str(out)]) == 0
    assert "0 new, 1 replaced, 1 kept" in " ".join(capsys.readouterr().err.split())
    assert len(_items(out)) == 2
    assert main(["catalog", "build", str(one_place / "s1"), "--out", str(out), "--replace"]) == 0
    assert {i.collection_id for i in _items(out).values()} == {"s1-grd"}
    assert not (out / "s2-l2a" / "collection.json").exists()
