"""The band registry: keys, published wavelengths, aliases, errors."""

from __future__ import annotations

import json

import pytest

from eo_fusion.bands import (
    AERIAL_ALIASES,
    ELEVATION_ALIASES,
    REGISTRY,
    S2_ALIASES,
    SAR_ALIASES,
    band_for_wavelength,
    band_keys,
    get_band,
)
from eo_fusion.errors import BandError


def test_architecture_keys_exist():
    s2 = [f"s2:B{i:02d}" for i in range(1, 13)] + ["s2:B8A", "s2:SCL"]
    others = ["s1:VV", "s1:VH", "s1:HH", "s1:HV", "aerial:red", "aerial:green", "aerial:blue",
              "aerial:nir", "elevation:dsm", "elevation:dtm", "elevation:ndsm", "elevation:slope",
              "elevation:aspect", "elevation:dem", "osm:buildings", "osm:roads_major",
              "osm:roads_minor", "osm:water", "label:landcover", "index:ndvi"]  # fmt: skip
    for key in s2 + others:
        spec = get_band(key)
        assert spec.key == key
        assert spec.family == key.split(":")[0]


def test_s2_wavelengths_agree_with_what_providers_publish(repo_root):
    """Registry centres vs. the eo:bands of real Earth Search and Planetary Computer items."""
    checked = 0
    for name in ("earth-search-v1__sentinel-2-l2a", "planetary-computer__sentinel-2-l2a"):
        data = json.loads((repo_root / f"tests/fixtures/stac/recorded/{name}.json").read_text())
        for asset in data["features"][0]["assets"].values():
            bands = asset.get("eo:bands") or []
            if len(bands) != 1:
                continue
            key = f"s2:{bands[0]['name']}"
            spec = get_band(key)
            provider_nm = bands[0]["center_wavelength"] * 1000
            # Providers round and some quote S2B centres: the published centre must lie inside
            # the registry band (centre +- half the bandwidth), and be nearest to it.
            assert abs(spec.wavelength_nm - provider_nm) <= spec.bandwidth_nm / 2, key
            assert band_for_wavelength(provider_nm, tolerance_nm=100) == key
            assert spec.bandwidth_nm and spec.bandwidth_nm > 0
            checked += 1
    assert checked >= 24


def test_s2_bands_are_ordered_and_resolutions_are_native():
    s2 = [get_band(k) for k in band_keys("s2") if k not in ("s2:SCL", "s2:CLP")]
    assert len(s2) == 13
    wl = [b.wavelength_nm for b in sorted(s2, key=lambda b: b.wavelength_nm)]
    assert wl == sorted(wl) and wl[0] > 400 and wl[-1] < 2300
    assert {b.resolution_m for b in s2} == {10.0, 20.0, 60.0}
    assert get_band("s2:B04").resolution_m == 10.0 and get_band("s2:B8A").resolution_m == 20.0


def test_sar_and_elevation_are_not_spectral():
    assert get_band("s1:VH").polarization == "VH"
    assert not get_band("s1:VH").is_spectral
    assert get_band("elevation:dsm").units == "m"
    assert get_band("aerial:nir").wavelength_nm > get_band("aerial:red").wavelength_nm


def test_unknown_key_names_close_matches():
    with pytest.raises(BandError, match="s2:B04") as err:
        get_band("s2:B4")
    assert "unknown band key 's2:B4'" in str(err.value)
    with pytest.raises(BandError):
        get_band("osm:landuse_")
    assert get_band("osm:landuse_allotments").kind == "osm"


def test_every_alias_points_at_a_registry_key():
    for table in (S2_ALIASES, SAR_ALIASES, AERIAL_ALIASES, ELEVATION_ALIASES):
        for alias, key in table.items():
            assert key in REGISTRY, (alias, key)
    assert S2_ALIASES["nir08"] == "s2:B8A" and S2_ALIASES["b4"] == "s2:B04"
    assert S2_ALIASES["b04_10m"] == "s2:B04"


def test_band_for_wavelength():
    assert band_for_wavelength(865) == "s2:B8A"
    assert band_for_wavelength(842) == "s2:B08"
    assert band_for_wavelength(1200) is None


def test_with_encoding_keeps_registry_entry_unchanged():
    base = get_band("s2:B02")
    item_spec = base.with_encoding(offset=-0.1)
    assert item_spec.offset == -0.1 and base.offset == 0.0
