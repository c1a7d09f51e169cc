"""Item normalisation against real recorded provider responses (tests/fixtures/stac)."""

from __future__ import annotations

import copy
import json
import logging

import pystac
import pytest

from eo_fusion.bands import get_band
from eo_fusion.catalogs.normalize import normalize_item, processing_baseline
from eo_fusion.errors import CatalogError

S2_BANDS = {f"s2:B{i:02d}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12)} | {"s2:B8A", "s2:SCL"}


def _features(repo_root, name):
    path = repo_root / "tests/fixtures/stac/recorded" / f"{name}.json"
    return json.loads(path.read_text())["features"]


def test_earth_search_s2_l2a(repo_root):
    feats = _features(repo_root, "earth-search-v1__sentinel-2-l2a")
    assert len(feats) == 7
    for f in feats:
        n = normalize_item(f)
        assert n.modality == "s2-l2a"
        assert set(n.bands) == S2_BANDS
        for key, b in n.bands.items():
            assert b.href.endswith(".tif"), "COGs are preferred over the JP2 copies"
            assert b.band_index == 1
            assert b.crs == f"EPSG:{f['properties']['proj:epsg']}"
            assert b.shape is not None and b.transform is not None
            if key != "s2:SCL":
                assert b.spec.wavelength_nm == get_band(key).wavelength_nm
                assert b.spec.scale == pytest.approx(1e-4)
                # earthsearch:boa_offset_applied=true: Earth Search already removed the
                # +1000 DN shift from the COGs, so the declared -0.1 must not be applied again.
                assert f["properties"]["earthsearch:boa_offset_applied"] is True
                assert b.spec.offset == 0.0
        assert n.bands["s2:B04"].spec.resolution_m == 10
        assert n.bands["s2:B8A"].spec.resolution_m == 20
        # Data assets the registry cannot place are reported, metadata is not.
        assert {"aot", "wvp"} <= set(n.unplaced_assets)
        assert "granule_metadata" in n.other_assets and "thumbnail" in n.other_assets


def test_planetary_computer_s2_l2a(repo_root):
    feats = _features(repo_root, "planetary-computer__sentinel-2-l2a")
    assert len(feats) == 33
    for f in feats:
        n = normalize_item(f)
        assert set(n.bands) == S2_BANDS
        # PC names B8A's common_name 'rededge': the band name decides, not the common name.
        assert n.bands["s2:B8A"].asset_key == "B8A"
        pb = float(f["properties"]["s2:processing_baseline"])
        expected = -0.1 if pb >= 4.0 else 0.0
        assert n.bands["s2:B02"].spec.offset == pytest.approx(expected)
        assert n.bands["s2:B02"].spec.scale == pytest.approx(1e-4)
        assert set(n.unplaced_assets) == {"AOT", "WVP"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # Earth Search: "offset already applied" wins over the declared raster:bands offset.
        ({"earthsearch:boa_offset_applied": True}, 0.0),
        ({"earthsearch:boa_offset_applied": True, "s2:processing_baseline": "03.01"}, 0.0),
        # false: the stored values are ESA's, so the baseline decides (the item says 05.11).
        ({"earthsearch:boa_offset_applied": False}, -0.1),
        ({"earthsearch:boa_offset_applied": False, "s2:processing_baseline": "03.01"}, 0.0),
        ({"sentinel:boa_offset_applied": False, "earthsearch:boa_offset_applied": None}, -0.1),
        # No flag: the declared raster:bands offset (-0.1) is used.
        ({"earthsearch:boa_offset_applied": None, "s2:processing_baseline": "03.01"}, -0.1),
    ],
)
def test_offset_rule_earth_search_flag(repo_root, change, expected):
    f = copy.deepcopy(_features(repo_root, "earth-search-v1__sentinel-2-l2a")[0])
    for k, v in change.items():
        if v is None:
            f["properties"].pop(k, None)
        else:
            f["properties"][k] = v
    assert normalize_item(f).bands["s2:B03"].spec.offset == pytest.approx(expected)


@pytest.mark.parametrize(
    ("baseline", "expected"), [("02.12", 0.0), ("03.01", 0.0), ("04.00", -0.1), ("05.11", -0.1)]
)
def test_offset_rule_pc_baseline_not_date(repo_root, baseline, expected):
    """Same 2019 acquisition date, different declared baselines -> different offsets."""
    f = copy.deepcopy(_features(repo_root, "planetary-computer__sentinel-2-l2a")[0])
    f["properties"]["s2:processing_baseline"] = baseline
    assert f["properties"]["datetime"].startswith("2019")
    assert normalize_item(f).bands["s2:B11"].spec.offset == pytest.approx(expected)


def test_offset_rule_cdse_style_declared_offset(repo_root):
    """CDSE items: B04_10m-style keys, processing:version, raster:bands offset declared."""
    f = copy.deepcopy(_features(repo_root, "planetary-computer__sentinel-2-l2a")[0])
    f["properties"].pop("s2:processing_baseline")
    f["properties"]["processing:version"] = "05.10"
    assets = {}
    for key, a in f["assets"].items():
        if key.startswith("B") and a.get("eo:bands"):
            native = int(a["gsd"])
            # CDSE also ships every band resampled to the coarser resolutions.
            for res in (60, 20, 10):
                if res >= native:
                    b = dict(a, gsd=res, **{"raster:bands": [{"scale": 0.0001, "offset": -0.1}]})
                    b.pop("eo:bands")
                    assets[f"{key}_{res}m"] = b
    f["assets"] = assets
    n = normalize_item(f)
    assert {"s2:B04", "s2:B8A", "s2:B12"} <= set(n.bands)
    assert n.bands["s2:B04"].asset_key == "B04_10m"  # native resolution wins
    assert n.bands["s2:B01"].asset_key == "B01_60m" and n.bands["s2:B05"].asset_key == "B05_20m"
    assert "B04_60m" in n.other_assets and not n.unplaced_assets
    assert n.bands["s2:B04"].spec.offset == pytest.approx(-0.1)
    assert processing_baseline(pystac.Item.from_dict(f)) == pytest.approx(5.10)


def test_offset_rule_baseline_from_product_id_and_unknown(repo_root, caplog):
    item = json.loads((repo_root / "tests/fixtures/stac/odc-stac/S2A_28QCH_20200714_0_L2A.json")
                      .read_text())  # fmt: skip
    # Earth Search v0: the baseline is only in sentinel:product_id (..._N0214_...).
    with caplog.at_level(logging.WARNING):
        n = normalize_item(item, modality="s2-l2a")
    assert n.bands["s2:B04"].spec.offset == 0.0
    assert not [r for r in caplog.records if "baseline unknown" in r.getMessage()]
    item["properties"]["sentinel:product_id"] = "S2A_MSIL2A_20220714T115221_N0400_R123_T28QCH"
    assert normalize_item(item, modality="s2-l2a").bands["s2:B04"].spec.offset == -0.1
    del item["properties"]["sentinel:product_id"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        n = normalize_item(item, modality="s2-l2a")
    assert n.bands["s2:B04"].spec.offset == 0.0
    warnings = [r for r in caplog.records if "baseline unknown" in r.getMessage()]
    assert len(warnings) == 1 and item["id"] in warnings[0].getMessage()


def test_earth_search_s1_grd(repo_root):
    for f in _features(repo_root, "earth-search-v1__sentinel-1-grd"):
        n = normalize_item(f)
        assert n.modality == "s1-grd"
        pols = f["properties"]["sar:polarizations"]
        assert set(n.bands) == {f"s1:{p}" for p in pols}
        b = n.bands[f"s1:{pols[0]}"]
        assert b.spec.kind == "sar" and b.spec.polarization == pols[0]
        assert b.spec.units == "amplitude" and b.spec.nodata == 0
        assert n.unplaced_assets == ()


def test_s1_vv_vh_assets(repo_root):
    f = copy.deepcopy(_features(repo_root, "earth-search-v1__sentinel-1-grd")[0])
    hh = f["assets"].pop("hh")
    f["assets"]["vv"], f["assets"]["vh"] = dict(hh), dict(hh)
    f["properties"]["sar:polarizations"] = ["VV", "VH"]
    n = normalize_item(f)
    assert set(n.bands) == {"s1:VV", "s1:VH"}


def test_earth_search_cop_dem(repo_root):
    feats = _features(repo_root, "earth-search-v1__cop-dem-glo-30")
    for f in feats:
        n = normalize_item(f)  # recorded with a fields filter: no assets, no geometry
        assert n.modality == "dem" and n.bands == {}
        assert n.geometry["type"] == "Polygon"
    f = copy.deepcopy(feats[0])
    f["assets"] = {
        "data": {
            "href": "https://copernicus-dem-30m.s3.amazonaws.com/x/x.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
        }
    }
    n = normalize_item(f)
    assert set(n.bands) == {"elevation:dem"} and n.bands["elevation:dem"].spec.units == "m"


def test_item_without_datetime_is_named(repo_root):
    item = json.loads((repo_root / "tests/fixtures/stac/odc-stac/lidar_dem.json").read_text())
    n = normalize_item(item, modality="dem")
    assert set(n.bands) == {"elevation:dem"}
    assert n.bands["elevation:dem"].crs == "EPSG:28355"
    item["properties"].pop("start_datetime")
    with pytest.raises(CatalogError, match="lidar"):
        normalize_item(item, modality="dem")


def test_unknown_modality_is_an_error_naming_the_item(repo_root):
    item = json.loads((repo_root / "tests/fixtures/stac/odc-stac/lidar_dem.json").read_text())
    with pytest.raises(CatalogError, match=item["id"]):
        normalize_item(item)


def test_signing_applies_to_band_hrefs_only(repo_root):
    f = _features(repo_root, "planetary-computer__sentinel-2-l2a")[0]
    n = normalize_item(f, sign=lambda h: h + "?sig=x")
    assert all(b.href.endswith("?sig=x") for b in n.bands.values())


# ------------------------------------------------------------------------------------------------
# Hand-written items in the other providers' layouts (tests/fixtures/stac/synthetic_providers).
# Written from the providers' conventions, not recorded: see that folder's README.md.
# ------------------------------------------------------------------------------------------------

S2_L1C_BANDS = {f"s2:B{i:02d}" for i in range(1, 13)} | {"s2:B8A"}


def _synthetic(repo_root, name):
    path = repo_root / "tests/fixtures/stac/synthetic_providers" / f"{name}.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("name", "modality", "keys", "offset", "unplaced"),
    [
        ("earth-search-v1__sentinel-2-l1c", "s2-l1c", S2_L1C_BANDS, -0.1, set()),
        (
            "earth-search-v1__sentinel-2-c1-l2a",
            "s2-l2a",
            S2_BANDS,
            -0.1,
            {"aot", "wvp", "cloud", "snow"},
        ),
        ("cdse__sentinel-2-l2a", "s2-l2a", S2_BANDS, -0.1, {"AOT_10m", "WVP_10m"}),
        ("cdse__sentinel-2-l1c", "s2-l1c", S2_L1C_BANDS, 0.0, set()),
    ],
)
def test_synthetic_s2_providers(repo_root, name, modality, keys, offset, unplaced):
    n = normalize_item(_synthetic(repo_root, name))
    assert n.modality == modality
    assert set(n.bands) == keys
    assert set(n.unplaced_assets) == unplaced
    for key, b in n.bands.items():
        assert b.band_index == 1 and b.crs == "EPSG:32632"
        if key == "s2:SCL":
            assert b.spec.kind == "categorical"
            continue
        reg = get_band(key)
        assert b.spec.wavelength_nm == reg.wavelength_nm
        assert b.spec.bandwidth_nm == reg.bandwidth_nm
        assert b.spec.scale == pytest.approx(1e-4)
        assert b.spec.offset == pytest.approx(offset)
        assert b.spec.nodata == 0
        # Each band comes from its native-resolution asset.
        assert b.spec.resolution_m == reg.resolution_m
    assert n.bands["s2:B8A"].spec.wavelength_nm == pytest.approx(864.7)


def test_cdse_asset_level_raster_fields(repo_root):
    """CDSE (STAC 1.1) gives scale/offset/nodata once per asset, not inside `bands`."""
    f = _synthetic(repo_root, "cdse__sentinel-2-l2a")
    f["properties"].pop("processing:version")  # the declared asset-level offset alone decides
    f["id"] = "S2B_MSIL2A_20240601T101559_R065_T32TMT_20240601T131708"  # no _Nxxyy_ either
    n = normalize_item(f)
    assert n.bands["s2:B04"].asset_key == "B04_10m"
    assert n.bands["s2:B04"].spec.offset == pytest.approx(-0.1)
    for a in f["assets"].values():
        if "raster:scale" in a:
            a["raster:scale"], a["raster:offset"], a["nodata"] = 2e-4, -0.2, 65535
    b = normalize_item(f).bands["s2:B11"]
    assert (b.spec.scale, b.spec.offset, b.spec.nodata) == (2e-4, -0.2, 65535)
    # A band's own field wins over the asset-level default.
    f["assets"]["B11_20m"]["bands"][0]["raster:scale"] = 1e-4
    assert normalize_item(f).bands["s2:B11"].spec.scale == pytest.approx(1e-4)
    # EOPF-style lower-case band names inside `bands` place too.
    f["assets"]["B11_20m"]["bands"][0]["name"] = "b11"
    assert normalize_item(f).bands["s2:B11"].asset_key == "B11_20m"


@pytest.mark.parametrize(
    ("baseline", "expected"), [("02.07", 0.0), ("03.00", 0.0), ("04.00", -0.1), ("05.11", -0.1)]
)
def test_cdse_offset_from_processing_version(repo_root, baseline, expected):
    f = _synthetic(repo_root, "cdse__sentinel-2-l1c")  # no offset declared, 2019 acquisition
    f["properties"]["processing:version"] = baseline
    f["id"] = "S2A_MSIL1C_20190702T101031_R022_T32TMT_20190702T121410"
    assert normalize_item(f).bands["s2:B10"].spec.offset == pytest.approx(expected)


@pytest.mark.parametrize(
    ("name", "modality", "units", "nodata"),
    [
        ("planetary-computer__sentinel-1-rtc", "s1-rtc", "linear", -32768),  # gamma0 power
        ("planetary-computer__sentinel-1-grd", "s1-grd", "amplitude", 0),
        ("cdse__sentinel-1-grd", "s1-grd", "amplitude", 0),
    ],
)
def test_synthetic_s1_providers(repo_root, name, modality, units, nodata):
    f = _synthetic(repo_root, name)
    n = normalize_item(f)
    assert n.modality == modality
    assert set(n.bands) == {"s1:VV", "s1:VH"} and not n.unplaced_assets
    for pol in ("VV", "VH"):
        b = n.bands[f"s1:{pol}"]
        assert b.asset_key == pol.lower() and b.spec.polarization == pol
        assert b.spec.kind == "sar" and b.spec.units == units and b.spec.nodata == nodata
    # A provider that declares decibels keeps them (any spelling).
    for a in f["assets"].values():
        if "raster:bands" in a:
            a["raster:bands"][0]["unit"] = "decibel"
        elif "data" in (a.get("roles") or []):
            a["unit"] = "dB"
    assert normalize_item(f).bands["s1:VV"].spec.units == "dB"


def test_synthetic_naip(repo_root):
    n = normalize_item(_synthetic(repo_root, "planetary-computer__naip"))
    assert n.modality == "aerial"
    order = {"aerial:red": 1, "aerial:green": 2, "aerial:blue": 3, "aerial:nir": 4}
    assert {k: b.band_index for k, b in n.bands.items()} == order
    for key, b in n.bands.items():
        assert b.asset_key == "image" and b.crs == "EPSG:26914"
        assert b.spec.wavelength_nm == get_band(key).wavelength_nm
        assert b.spec.resolution_m == pytest.approx(0.6)  # item-level gsd
    assert {"tilejson", "rendered_preview", "thumbnail", "metadata"} <= set(n.other_assets)


def test_synthetic_dem_and_worldcover(repo_root):
    n = normalize_item(_synthetic(repo_root, "planetary-computer__cop-dem-glo-30"))
    assert n.modality == "dem" and set(n.bands) == {"elevation:dem"}
    dem = n.bands["elevation:dem"]
    assert dem.spec.units == "m" and dem.spec.resolution_m == 30 and dem.crs == "EPSG:4326"
    n = normalize_item(_synthetic(repo_root, "planetary-computer__esa-worldcover"))
    assert n.modality == "labels" and set(n.bands) == {"label:landcover"}
    lc = n.bands["label:landcover"]
    assert lc.asset_key == "map" and lc.spec.kind == "categorical" and lc.spec.nodata == 0
    assert n.unplaced_assets == ("input_quality",)
    assert n.datetime.year == 2021  # datetime null: start_datetime


@pytest.mark.parametrize(
    ("collection", "expected"),
    [
        ("sentinel-2-pre-c1-l2a", "s2-l2a"),  # Earth Search v1
        ("some-mirror-of-s2", "s2-l2a"),  # unknown id: ESA product:type S2MSI2A decides
    ],
)
def test_modality_from_collection_or_esa_product_type(repo_root, collection, expected):
    f = _synthetic(repo_root, "cdse__sentinel-2-l2a")
    f["collection"] = collection
    assert normalize_item(f).modality == expected
    f = _synthetic(repo_root, "cdse__sentinel-2-l1c")
    f["collection"] = "some-mirror-of-s2"
    assert normalize_item(f).modality == "s2-l1c"


def test_cdse_native_only_keys_without_resolution_suffix(repo_root):
    """Whether a CDSE asset is called B04_10m or B04, the band and its encoding are the same."""
    f = _synthetic(repo_root, "cdse__sentinel-2-l1c")
    f["assets"] = {k.split("_")[0]: a for k, a in f["assets"].items()}
    n = normalize_item(f)
    assert set(n.bands) == S2_L1C_BANDS
    assert n.bands["s2:B8A"].asset_key == "B8A" and n.bands["s2:B8A"].spec.scale == 1e-4
