"""ModalityStacks end to end: real sample data, HTTP range reads, dask workers, the CLI."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import yaml
from affine import Affine
from odc.geo.geobox import GeoBox
from rio_cogeo.cogeo import cog_validate
from scipy import ndimage

from eo_fusion.bands import get_band
from eo_fusion.catalogs.fileserver import serve_directory
from eo_fusion.catalogs.items import BandAsset
from eo_fusion.catalogs.local import local_item
from eo_fusion.config import ModalitySpec
from eo_fusion.coreg.shift import estimate_shift
from eo_fusion.gdal import GDALOptions
from eo_fusion.grid import grid_from_aoi, make_tiles
from eo_fusion.sources.reader import ReadSpec, read_assets
from eo_fusion.stack import build_stack, modality_array
from eo_fusion.stack_io import open_stack_zarr, write_modality_cogs, write_stack_zarr

DATA = Path(__file__).resolve().parents[2] / "catalogs" / "sample" / "data"
SLO = DATA / "slovenia"
S2_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11"]
S2_ORDER.append("B12")
# A 10 m grid anchored on whole 10 m multiples, inside the Slovenia rasters (which have 9.995 x
# 9.997 m pixels on another origin: every layer has to be resampled, none can be pasted).
SLO_GRID = grid_from_aoi(
    (465_200, 5_079_300, 466_150, 5_080_230), 10, crs="EPSG:32633", aoi_crs="EPSG:32633"
)


def _slovenia_items():
    s2 = []
    for date in ("2015-07-11", "2015-08-20", "2015-08-30", "2015-09-09"):
        path = SLO / f"S2_L1C_TOA_{date}_13bands.tif"
        files = {f"s2:{b}": (path, i + 1) for i, b in enumerate(S2_ORDER)}
        when = datetime.fromisoformat(date).replace(tzinfo=UTC)
        s2.append(local_item(f"slo-{date}", "s2-l1c", files, when, scale=1.0, nodata=-1.0))
    when = datetime(2016, 1, 1, tzinfo=UTC)
    dem = local_item("slo-dem", "dem", {"elevation:dem": SLO / "DEM_slovenia_10m.tif"}, when)
    lab = local_item("slo-lulc", "labels", {"label:landcover": SLO / "LULC_slovenia_10m.tif"}, when)
    return {"s2-l1c": s2, "dem": [dem], "labels": [lab]}


SLO_MODS = {
    "s2-l1c": ModalitySpec(mode="timeseries"),
    "dem": ModalitySpec(bands=["elevation:dem", "elevation:slope"]),
    "labels": ModalitySpec(),
}


def _source_pixel_coords(path: Path, gbox: GeoBox) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractional (row, col) of every grid pixel centre in the source raster, and its data."""
    with rasterio.open(path) as ds:
        data, inv = ds.read(1), ~ds.transform
    yy, xx = np.meshgrid(
        np.arange(gbox.shape.y) + 0.5, np.arange(gbox.shape.x) + 0.5, indexing="ij"
    )
    x, y = gbox.transform @ (xx, yy)
    col, row = inv @ (x, y)
    return row - 0.5, col - 0.5, data


def _read(path: Path, band: int) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(band)


def test_slovenia_dates_dem_and_labels_on_one_grid_without_shift() -> None:
    ds = build_stack(SLO_GRID, _slovenia_items(), SLO_MODS)
    assert ds.attrs["transform"] == list(SLO_GRID.transform)[:6]
    s2 = modality_array(ds, "s2-l1c")
    assert s2.dims == ("time", "band", "y", "x") and s2.sizes["time"] == 4
    assert list(s2.band.values) == [f"s2:{b}" for b in S2_ORDER]
    # Labels: nearest neighbour, so each pixel holds exactly the class under its centre.
    row, col, labels = _source_pixel_coords(SLO / "LULC_slovenia_10m.tif", SLO_GRID)
    expected = labels[np.round(row).astype(int), np.round(col).astype(int)].astype(np.float32)
    got = modality_array(ds, "labels").sel(band="label:landcover").values
    ok = expected != 0
    np.testing.assert_array_equal(got[ok], expected[ok])
    # DEM: bilinear, so it equals the source interpolated at each pixel centre.
    row, col, dem = _source_pixel_coords(SLO / "DEM_slovenia_10m.tif", SLO_GRID)
    ref = ndimage.map_coordinates(dem.astype(np.float64), [row, col], order=1, mode="nearest")
    got = modality_array(ds, "dem").sel(band="elevation:dem").values
    np.testing.assert_allclose(got[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-3)
    # S2 dates: stacking adds no shift. The 2015 dates are themselves misregistered by up to
    # ~1 px (before Sentinel-2's multi-temporal geometric refinement), so compare the shift
    # measured on the stacked arrays with the one measured on the source pixels.
    nir = s2.sel(band="s2:B08")
    dates = list(ds["s2-l1c"].attrs["dates"])
    for d1, d2 in [("2015-07-11", "2015-09-09"), ("2015-08-30", "2015-09-09")]:
        a, b = (nir.isel(time=dates.index(f"{d}T00:00:00+00:00")).values for d in (d1, d2))
        on_grid = estimate_shift(a, b)
        src = [_read(SLO / f"S2_L1C_TOA_{d}_13bands.tif", 8) for d in (d1, d2)]
        native = estimate_shift(*src)
        assert on_grid.confidence > 20 and native.confidence > 20
        assert abs(on_grid.dx - native.dx) < 0.1 and abs(on_grid.dy - native.dy) < 0.1
    frac = dict(zip(dates, ds["s2-l1c"].attrs["valid_fraction"], strict=True))
    assert frac["2015-08-20T00:00:00+00:00"] < 0.1 < 0.9 < frac["2015-07-11T00:00:00+00:00"]
    assert ds["s2-l1c:valid"].dims == ("s2-l1c:time", "y", "x")
    assert ds["dem"].attrs["units"] == ["m", "degree"]
    assert ds["s2-l1c"].attrs["source_items"][0] == "slo-2015-07-11"


# distributed's LocalCluster teardown leaves a listening socket for the garbage collector, which
# pytest reports as an unraisable ResourceWarning after the test; it is not a leak in our code.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_build_stack_is_deterministic_and_runs_in_a_dask_worker() -> None:
    from distributed import Client, LocalCluster

    items, gdal = _slovenia_items(), GDALOptions(http_timeout_s=5)
    tile = make_tiles(SLO_GRID, 48, 4)[0]
    args = (tile.padded, items, SLO_MODS)
    assert pickle.loads(pickle.dumps((args, gdal))) == (args, gdal)
    local = build_stack(*args, gdal=gdal)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cl,
        Client(cl) as client,
    ):
        remote = client.submit(build_stack, *args, gdal=gdal).result()
    xr.testing.assert_identical(local, remote)


def test_bigearthnet_s2_l2a_and_s1_stack(tmp_path: Path) -> None:
    ben = DATA / "bigearthnet"
    s1_dir = ben / "s1" / "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"
    s2_dir = ben / "s2" / "S2A_MSIL2A_20170613T101031_87_48"
    bands = [b for b in S2_ORDER if b != "B10"]
    s2 = local_item(
        s2_dir.name,
        "s2-l2a",
        {f"s2:{b}": next(s2_dir.glob(f"*_{b}.tif")) for b in bands},
        datetime(2017, 6, 13, 10, 10, tzinfo=UTC),
    )
    s1 = local_item(
        s1_dir.name,
        "s1-grd",
        {"s1:VV": next(s1_dir.glob("*_VV.tif")), "s1:VH": next(s1_dir.glob("*_VH.tif"))},
        datetime(2017, 6, 13, 16, 50, tzinfo=UTC),
        units="dB",
        nodata=-9999.0,
        properties={"sat:orbit_state": "ascending"},
    )
    with rasterio.open(s2.bands["s2:B02"].href) as src:
        grid = GeoBox(src.shape, src.transform, src.crs.to_wkt())
    mods = {"s2-l2a": ModalitySpec(), "s1-grd": ModalitySpec()}
    ds = build_stack(grid, {"s2-l2a": [s2], "s1-grd": [s1]}, mods)
    s2a = modality_array(ds, "s2-l2a")
    assert s2a.shape == (12, 120, 120) and ds["s2-l2a"].dtype == np.float32
    assert 0 < float(s2a.median()) < 0.5  # reflectance, not DN
    # The 10 m bands are pasted unchanged: B04 equals DN * 1e-4 exactly.
    with rasterio.open(s2.bands["s2:B04"].href) as src:
        np.testing.assert_allclose(s2a.sel(band="s2:B04"), src.read(1) * 1e-4, rtol=1e-6)
    s1a = modality_array(ds, "s1-grd")
    assert list(s1a.band.values) == ["s1:VV", "s1:VH"]
    assert -35 < float(s1a.sel(band="s1:VH").median()) < float(s1a.sel(band="s1:VV").median()) < 0
    assert ds["s1-grd"].attrs["orbit_state"] == ["ascending"]
    assert ds["s2-l2a"].attrs["cloud_mask"] == ["none"]  # BigEarthNet patches ship no SCL
    coreg = json.loads(ds.attrs["coreg"])
    assert {"dx", "dy", "confidence", "applied"} <= set(coreg["s1-grd"])
    # Zarr round trip (names with ':' are stored as '.') and one COG per modality.
    write_stack_zarr(ds, tmp_path / "stack.zarr", "r000_c000")
    xr.testing.assert_identical(open_stack_zarr(tmp_path / "stack.zarr", "r000_c000").load(), ds)
    for path in write_modality_cogs(ds, tmp_path / "cog", "r000_c000"):
        assert cog_validate(str(path))[0], path
        with rasterio.open(path) as src:
            assert src.descriptions[0] in ("s2:B01", "s1:VV")


def _big_cog(path: Path) -> Path:
    """A 4096 x 4096 uint16 COG (512 px tiles, overviews): smooth, so it compresses like imagery."""
    y, x = np.mgrid[0:4096, 0:4096].astype(np.float32)
    arr = (1000 + 500 * np.sin(x / 97.0) * np.cos(y / 131.0) + (x + y) / 8).astype(np.uint16)
    profile = {
        "driver": "COG",
        "width": 4096,
        "height": 4096,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": Affine(10, 0, 400_000, 0, -10, 5_100_000),
        "nodata": 0,
        "blocksize": 512,
        "compress": "deflate",
        "overview_resampling": "average",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)
    return path


def test_windowed_http_read_fetches_a_small_fraction(tmp_path: Path) -> None:
    cog = _big_cog(tmp_path / "big.tif")
    size = cog.stat().st_size
    tile = GeoBox((256, 256), Affine(10, 0, 420_000, 0, -10, 5_080_000), "EPSG:32633")
    spec = get_band("s2:B04")
    with serve_directory(tmp_path) as srv:
        url = srv.url_for("big.tif")
        asset = BandAsset("s2:B04", "B04", url, 1, spec)
        remote = read_assets([asset], tile, ReadSpec("reflectance"))
        sent = srv.log.bytes_sent(url)
        srv.log.clear()
        coarse_full = GeoBox((512, 512), Affine(80, 0, 400_000, 0, -80, 5_100_000), "EPSG:32633")
        read_assets([asset], coarse_full, ReadSpec("reflectance"))
        sent_overview = srv.log.bytes_sent(url)
    local = read_assets(
        [BandAsset("s2:B04", "B04", str(cog), 1, spec)], tile, ReadSpec("reflectance")
    )
    np.testing.assert_array_equal(remote, local)
    print(f"http bytes: tile {sent} ({sent / size:.1%}), overview {sent_overview} of {size}")
    assert sent < 0.05 * size, (sent, size)  # a 256 px tile of a 4096 px image: ~0.4 % of pixels
    # The whole image at 8x coarser comes from the overviews, far less than the full file.
    assert sent_overview < 0.2 * size, (sent_overview, size)


@pytest.mark.slow
def test_cli_stack_writes_every_tile(tmp_path: Path) -> None:
    from eo_fusion.cli import main

    job = {
        "name": "slovenia-stack",
        "catalog": "sample",
        "aoi": {"bbox": [465_200, 5_079_300, 466_150, 5_080_230], "crs": "EPSG:32633"},
        "time": {"start": "2015-07-01", "end": "2015-09-30"},
        "grid": {"resolution": 10, "tile_size": 48, "halo": 4},
        "modalities": {
            "s2-l1c": {"mode": "timeseries", "aggregate": "monthly"},
            "dem": {"bands": ["elevation:dem"]},
            "labels": {},
        },
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    out = tmp_path / "out"
    assert main(["stack", str(path), "--out", str(out), "--cog"]) == 0
    tiles = sorted(p.name for p in (out / "stack.zarr").iterdir() if p.name.startswith("r"))
    assert tiles == ["r000_c000", "r000_c001", "r001_c000", "r001_c001"]
    ds = open_stack_zarr(out / "stack.zarr", "r001_c001")
    s2 = modality_array(ds, "s2-l1c")
    assert [str(t)[:10] for t in s2.time.values] == ["2015-07-01", "2015-08-01", "2015-09-01"]
    assert ds["aoi"].dtype == bool and ds.attrs["tile_id"] == "r001_c001"
    assert cog_validate(str(out / "cog" / "r000_c000" / "dem.tif"))[0]
