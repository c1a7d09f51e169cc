"""Spectral ranges and the spectrum-aware embedding: any band subset and order, refusals by name."""

from __future__ import annotations

import itertools

import pytest
import torch

from eo_fusion.bands import BandSpec, get_band
from eo_fusion.errors import BandError
from eo_fusion.models.encoder import EncoderConfig, SpectralViT
from eo_fusion.models.spectral import (
    ALL_RANGES,
    SPECTRAL_RANGES,
    SpectralEmbedding,
    assign_range,
    native_range,
)

S2 = [f"s2:{b}" for b in ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                         "B10", "B11", "B12")]  # fmt: skip


def test_every_sentinel2_band_has_its_own_range():
    ranges = [native_range(get_band(k)) for k in S2]
    assert None not in ranges
    assert len(set(ranges)) == len(S2)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("aerial:red", "red"),
        ("aerial:nir", "nir_broad"),
        ("s1:VV", "sar_vv"),
        ("s1:VH", "sar_vh"),
        ("elevation:dsm", "elevation"),
        ("elevation:ndsm", "height"),
        ("osm:buildings", "osm_buildings"),
        ("osm:landuse_forest", "osm_landuse"),
        ("index:ndvi", "ndvi"),
    ],
)
def test_other_sensors_share_ranges(key, expected):
    assert native_range(get_band(key)) == expected


def test_ranges_do_not_overlap():
    spans = sorted((r.lo_nm, r.hi_nm) for r in SPECTRAL_RANGES)
    for (_, hi), (lo, _) in itertools.pairwise(spans):
        assert hi <= lo


def test_untrained_wavelength_is_interpolated_by_inverse_distance():
    trained = [r.name for r in SPECTRAL_RANGES]
    wv = next(r for r in SPECTRAL_RANGES if r.name == "water_vapour").centre_nm
    ci = next(r for r in SPECTRAL_RANGES if r.name == "cirrus").centre_nm
    wl = wv + 0.25 * (ci - wv)  # in the 970-1340 nm gap, nearer to water vapour
    a = assign_range(BandSpec("test:b1", "reflectance", wavelength_nm=wl), trained)
    assert a.ranges == ("water_vapour", "cirrus")
    assert a.weights[0] == pytest.approx(0.75)
    assert sum(a.weights) == pytest.approx(1.0)
    # A range missing from the model is bridged by its neighbours, nearer one weighted more.
    without_red = [r for r in trained if r != "red"]
    b = assign_range(get_band("s2:B04"), without_red)
    assert b.ranges == ("green", "red_edge_1")
    assert b.weights[1] > b.weights[0]


def test_band_without_wavelength_or_range_is_refused_by_name():
    with pytest.raises(BandError, match="s1:HH"):
        assign_range(get_band("s1:HH"), ALL_RANGES)
    with pytest.raises(BandError, match="s2:SCL"):
        assign_range(get_band("s2:SCL"), ALL_RANGES)
    with pytest.raises(BandError, match="elevation:dsm"):
        assign_range(get_band("elevation:dsm"), ["red", "green"])


def test_unknown_band_key_is_refused_by_name():
    emb = SpectralEmbedding(ALL_RANGES, 4, 16)
    with pytest.raises(BandError, match="s2:B99"):
        emb(torch.zeros(1, 2, 8, 8), ["s2:B04", "s2:B99"])


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return SpectralViT(EncoderConfig("nano", 4, 32, ALL_RANGES)).eval()


def test_permuting_band_order_changes_output_below_1e5(encoder):
    keys = [*S2, "s1:VV", "s1:VH", "elevation:dem"]
    x = torch.randn(2, len(keys), 32, 32)
    perm = torch.randperm(len(keys), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        a, _ = encoder(x, keys)
        b, _ = encoder(x[:, perm], [keys[i] for i in perm])
    assert (a - b).abs().max() < 1e-5


def test_dropping_a_band_runs_and_changes_the_tokens(encoder):
    keys = S2[:6]
    x = torch.randn(1, 6, 32, 32)
    with torch.inference_mode():
        full, _ = encoder(x, keys)
        part, _ = encoder(x[:, 1:], keys[1:])
    assert part.shape == full.shape
    assert torch.isfinite(part).all()
    assert (full - part).abs().max() > 1e-3


def test_token_is_the_mean_of_band_projections():
    emb = SpectralEmbedding(["red", "green"], 2, 8)
    x = torch.randn(1, 2, 4, 4)
    both = emb(x, ["s2:B04", "s2:B03"])
    one = emb(x[:, :1], ["s2:B04"])
    other = emb(x[:, 1:], ["s2:B03"])
    assert torch.allclose(both, (one + other) / 2, atol=1e-6)


def test_duplicate_band_is_refused():
    emb = SpectralEmbedding(["red"], 2, 8)
    with pytest.raises(BandError, match="twice"):
        emb(torch.zeros(1, 2, 4, 4), ["s2:B04", "s2:B04"])


def test_smarties_table_maps_registry_keys_and_other_sensors():
    from eo_fusion.models.spectral import SMARTIES_KEYS, SMARTIES_RANGES, native_range

    names = [r.name for r in SMARTIES_RANGES]
    assert len(names) == 17 and names[6] == "red_2" and names[15:] == ["microwave_1", "microwave_2"]
    assert native_range(get_band("s2:B07"), "smarties") == "near_infrared_2"  # index 10
    assert native_range(get_band("aerial:red"), "smarties") == "red_1"
    assert native_range(get_band("s2:B10"), "smarties") is None
    assert set(SMARTIES_KEYS.values()) <= set(names)
    # Another sensor's red (655 nm) goes to the narrowest SMARTIES range holding it: S2's red.
    other = BandSpec("x:red", "reflectance", wavelength_nm=655.0)
    assert native_range(other, "smarties") == "red_2"
    with pytest.raises(BandError, match="unknown spectral range"):
        SpectralEmbedding(["red"], 2, 8, table="smarties")
