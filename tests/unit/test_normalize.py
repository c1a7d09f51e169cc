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
                # earthsearch:boa_offset_applied=true: DN still carry +1000 -> offset -0.1
                assert f["properties"]["earthsearch:boa_offset_applied"] is True
                assert b.spec.offset == pytest.approx(-0.1)
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
        # Earth Search: its own flag wins over raster:bands and baseline.
        ({"earthsearch:boa_offset_applied": False}, 0.0),
        ({"earthsearch:boa_offset_applied": True}, -0.1),
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
    # Without the flag the declared raster:bands offset (-0.1) is used.
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
