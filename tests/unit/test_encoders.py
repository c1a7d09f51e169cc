"""Published encoders (Galileo-nano, Presto): equality with the reference implementations,
shipped weights and cards, band mapping, missing groups, heads and ``eo-fusion model list``.

The fixtures in tests/fixtures/encoders were made by running the reference code of
nasaharvest/galileo and nasaharvest/presto with the same weights (see the README there).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from eo_fusion.errors import CheckpointError, ModelError
from eo_fusion.models import encoders as enc_mod
from eo_fusion.models import presto as presto_mod
from eo_fusion.models.encoders import available_encoders, load_encoder, read_card
from eo_fusion.models.galileo import (
    GalileoInputs,
    GalileoLandCover,
    inputs_from_bands,
    slope_degrees,
)
from eo_fusion.models.presto import PrestoCrop

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "encoders"
TOL = 1e-4
GALILEO_CASES = ["galileo_s1_s2_srtm", "galileo_no_s1_patch2", "galileo_cloudy_patch"]
PRESTO_CASES = ["presto_s1_s2_srtm", "presto_s2_only", "presto_gaps", "presto_dynamic_world"]
S2 = [
    "s2:B02",
    "s2:B03",
    "s2:B04",
    "s2:B05",
    "s2:B06",
    "s2:B07",
    "s2:B08",
    "s2:B8A",
    "s2:B11",
    "s2:B12",
]


@pytest.fixture(scope="module")
def galileo():
    return load_encoder("galileo-nano")


@pytest.fixture(scope="module")
def presto():
    return load_encoder("presto")


def _fixture(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as d:
        return {k: d[k] for k in d.files}


def _months(d: dict[str, np.ndarray]) -> int | torch.Tensor:
    m = d["months"]
    return int(m) if m.ndim == 0 else torch.from_numpy(m)


# ------------------------------------------------------------------------------------------------
# Equality with the reference implementations.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", GALILEO_CASES)
def test_galileo_tokens_equal_reference(galileo, case):
    model, _ = galileo
    d = _fixture(case)
    inp = GalileoInputs(**{k[3:]: torch.from_numpy(v) for k, v in d.items() if k[:3] == "in_"})
    with torch.no_grad():
        out = model(inp, int(d["patch"]))
    for kind in ("s_t", "sp", "t", "st"):
        ref_mask = d[f"out_{kind}_m"]
        np.testing.assert_array_equal(getattr(out, f"{kind}_m").numpy(), ref_mask)
        keep = ref_mask == 0
        np.testing.assert_allclose(
            getattr(out, kind).numpy()[keep], d[f"out_{kind}"][keep], atol=TOL, rtol=0
        )
    b = d["per_patch"].shape[0]
    np.testing.assert_allclose(
        out.per_patch().reshape(b, -1, model.dim).numpy(), d["per_patch"], atol=TOL, rtol=0
    )
    np.testing.assert_allclose(out.pooled().numpy(), d["pooled"], atol=TOL, rtol=0)


@pytest.mark.parametrize("case", GALILEO_CASES)
def test_galileo_from_registry_bands_equals_reference(galileo, case):
    """Registry bands in physical units (NaN = missing) -> the reference's per-patch features."""
    model, card = galileo
    d = _fixture(case)
    p = int(d["patch"])
    latlon = torch.from_numpy(d["latlon"]) if bool(d["use_latlon"]) else None
    inp, used = inputs_from_bands(
        card,
        torch.from_numpy(d["x"]),
        [str(k) for k in d["keys"]],
        patch_size=p,
        months=torch.from_numpy(d["months"]),
        latlon=latlon,
    )
    assert ("S1" in used) == ("s1:VV" in d["keys"])
    np.testing.assert_array_equal(inp.s_t_m.numpy(), d["in_s_t_m"])
    with torch.no_grad():
        out = model(inp, p)
    b = d["per_patch"].shape[0]
    np.testing.assert_allclose(
        out.per_patch().reshape(b, -1, model.dim).numpy(), d["per_patch"], atol=TOL, rtol=0
    )


@pytest.mark.parametrize("case", PRESTO_CASES)
def test_presto_embedding_equals_reference(presto, case):
    model, _ = presto
    d = _fixture(case)
    with torch.no_grad():
        emb = model(
            torch.from_numpy(d["in_x"]),
            torch.from_numpy(d["in_mask"]),
            torch.from_numpy(d["latlon"]),
            _months(d),
            torch.from_numpy(d["in_dw"]),
        )
    np.testing.assert_allclose(emb.numpy(), d["embedding"], atol=TOL, rtol=0)


@pytest.mark.parametrize("case", [c for c in PRESTO_CASES if c != "presto_dynamic_world"])
def test_presto_from_registry_bands_equals_reference(presto, case):
    model, card = presto
    d = _fixture(case)
    x, mask = presto_mod.inputs_from_bands(card, torch.from_numpy(d["x"]), list(d["keys"]))
    np.testing.assert_array_equal(mask.numpy(), d["in_mask"])
    with torch.no_grad():
        emb = model(x, mask, torch.from_numpy(d["latlon"]), _months(d))
    np.testing.assert_allclose(emb.numpy(), d["embedding"], atol=TOL, rtol=0)


def test_fixture_cases_are_not_trivial():
    """The fixtures exercise absent groups and per-sample masks (else equality proves little)."""
    cloudy = _fixture("galileo_cloudy_patch")["in_s_t_m"]
    assert cloudy[0].max() == 1 and cloudy[1, ..., 1:].max() == 0
    assert _fixture("galileo_no_s1_patch2")["in_s_t_m"][..., 0].min() == 1
    gaps = _fixture("presto_gaps")["in_mask"]
    assert gaps[1, 2:5, 2].all() and not gaps[0, :, 2].any() and gaps[2, :2, 0].all()


# ------------------------------------------------------------------------------------------------
# Shipped weights and cards.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["galileo-nano", "presto"])
def test_shipped_encoder_card(name):
    model, card = load_encoder(name)
    folder = enc_mod.ENCODERS_DIR / name
    n = sum(p.numel() for p in model.state_dict().values())
    assert card["weights"]["n_parameters"] == n
    assert (folder / "model.safetensors").stat().st_size < 5_000_000
    assert card["license"]["spdx"] == "MIT"
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert "Tseng" in card["citation"] and "arXiv:" in card["citation"]
    assert len(card["source"]["commit"]) == 40
    assert not model.training


def test_galileo_card_normalisation_is_the_pretraining_one():
    """S2 B4 is normalised with mean ± 2 std of the pretraining statistics, not by 10 000."""
    card = read_card("galileo-nano")
    b4 = next(b for g in card["groups"]["space_time"] for b in g["bands"] if b["name"] == "B4")
    mean, std = 1343.09883810357, 1092.678723527555  # config/normalization.json, "13"[4]
    assert b4["key"] == "s2:B04" and b4["convert"] == "x10000"
    assert b4["shift"] == pytest.approx(mean - 2 * std) and b4["div"] == pytest.approx(4 * std)


def test_corrupt_weights_are_refused(tmp_path, monkeypatch):
    shutil.copytree(enc_mod.ENCODERS_DIR, tmp_path / "encoders")
    path = tmp_path / "encoders" / "presto" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    monkeypatch.setattr(enc_mod, "ENCODERS_DIR", tmp_path / "encoders")
    with pytest.raises(CheckpointError, match="sha256"):
        load_encoder("presto")


def test_unknown_encoder_is_refused():
    with pytest.raises(CheckpointError, match="galileo-nano, presto"):
        load_encoder("galileo-base")


# ------------------------------------------------------------------------------------------------
# Band mapping and missing data.
# ------------------------------------------------------------------------------------------------


def _s1_s2(rng: np.random.Generator, b: int, t: int, h: int) -> torch.Tensor:
    s1 = 10 ** (rng.uniform(-20, -8, (b, t, 2, h, h)) / 10)
    s2 = rng.uniform(0.02, 0.4, (b, t, 10, h, h))
    return torch.from_numpy(np.concatenate([s1, s2], axis=2).astype(np.float32))


def test_galileo_one_missing_pixel_masks_its_whole_patch(galileo):
    model, card = galileo
    keys = ["s1:VV", "s1:VH", *S2]
    x = _s1_s2(np.random.default_rng(3), 1, 1, 8)
    one = x.clone()
    one[0, 0, 0, 1, 2] = torch.nan  # one S1 pixel of the top-left 4 x 4 patch
    whole = x.clone()
    whole[0, 0, :2, :4, :4] = torch.nan  # the whole S1 patch
    with torch.no_grad():
        a = model(inputs_from_bands(card, one, keys, patch_size=4)[0], 4).per_patch()
        b = model(inputs_from_bands(card, whole, keys, patch_size=4)[0], 4).per_patch()
        c = model(inputs_from_bands(card, x, keys, patch_size=4)[0], 4).per_patch()
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert (a[0, 0, 0] - c[0, 0, 0]).abs().max() > 1e-3  # S1 really left that patch


def test_galileo_band_errors(galileo):
    _, card = galileo
    x = torch.ones(1, 2, 8, 8)
    with pytest.raises(ModelError, match="none of Galileo's band groups"):
        inputs_from_bands(card, x, ["s2:B02", "s2:B01"], patch_size=4)  # RGB group incomplete
    with pytest.raises(ModelError, match="duplicate"):
        inputs_from_bands(card, x, ["s1:VV", "s1:VV"], patch_size=4)
    with pytest.raises(ModelError, match="2 band keys"):
        inputs_from_bands(card, torch.ones(1, 3, 8, 8), ["s1:VV", "s1:VH"], patch_size=4)


def test_galileo_rejects_bad_patch_and_empty_samples(galileo):
    model, card = galileo
    x = _s1_s2(np.random.default_rng(4), 1, 1, 6)
    keys = ["s1:VV", "s1:VH", *S2]
    inp, _ = inputs_from_bands(card, x, keys, patch_size=4)
    with pytest.raises(ModelError, match="multiple of the patch size"):
        model(inp, 4)
    empty = torch.full((1, 1, 12, 8, 8), torch.nan)
    inp, _ = inputs_from_bands(card, empty, keys, patch_size=4)
    with pytest.raises(ModelError, match="no unmasked token"):
        model(inp, 4)


def test_slope_from_a_tilted_plane():
    cols = torch.arange(6, dtype=torch.float32)
    dem = (0.5 * 10.0 * cols).expand(5, 6)  # rises 0.5 m per metre eastwards, 10 m pixels
    slope = slope_degrees(dem, 10.0)
    torch.testing.assert_close(slope, torch.full((5, 6), float(np.degrees(np.arctan(0.5)))))


def test_galileo_derives_slope_and_ndvi(galileo):
    """Without elevation:slope / index:ndvi the SRTM and NDVI groups are derived, not dropped."""
    _, card = galileo
    rng = np.random.default_rng(5)
    x = torch.cat([_s1_s2(rng, 1, 1, 8), torch.full((1, 1, 1, 8, 8), 300.0)], dim=2)
    inp, used = inputs_from_bands(card, x, ["s1:VV", "s1:VH", *S2, "elevation:dem"], patch_size=4)
    assert "SRTM" in used and "NDVI" in used
    nir, red = x[0, 0, 2 + 6], x[0, 0, 2 + 2]
    torch.testing.assert_close(inp.s_t_x[0, :, :, 0, -1], (nir - red) / (nir + red))


def test_presto_month_series():
    torch.testing.assert_close(
        presto_mod.month_series(11, 2, 3, torch.device("cpu")),
        torch.tensor([[11, 0, 1], [11, 0, 1]]),
    )
    with pytest.raises(ModelError, match="0 \\(January\\)"):
        presto_mod.month_series(12, 1, 3, torch.device("cpu"))


# ------------------------------------------------------------------------------------------------
# Heads.
# ------------------------------------------------------------------------------------------------


def test_galileo_landcover_head_learns_with_a_frozen_encoder(galileo):
    model, card = galileo
    torch.manual_seed(0)
    head = GalileoLandCover(model, card, n_classes=2, patch_size=4, channels=16)
    rng = np.random.default_rng(6)
    x = torch.cat([_s1_s2(rng, 2, 1, 8), torch.full((2, 1, 2, 8, 8), 5.0)], dim=2)
    keys = ["s1:VV", "s1:VH", *S2, "elevation:dem", "elevation:slope"]
    y = (x[:, 0, 2 + 6] > x[:, 0, 2 + 6].median()).long()  # bright-NIR pixels are class 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=2e-2)
    head.train()
    assert head.training and not model.training  # the frozen encoder stays in eval mode
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(head(x, keys), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert head(x, keys).shape == (2, 2, 8, 8)
    with torch.no_grad():
        feats, _ = head.embed(x, keys)
        inp, _ = inputs_from_bands(card, x, keys, patch_size=4)
        direct = model(inp, 4).per_patch().permute(0, 3, 1, 2)
    torch.testing.assert_close(feats, direct)
    assert feats.shape == (2, model.dim, 2, 2)
    hole = x.clone()
    hole[0, :, :, :4, :4] = torch.nan  # a patch without any data
    with torch.no_grad():
        assert torch.isfinite(head(hole, keys)).all()
    assert losses[-1] < 0.5 * losses[0]
    assert not model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_presto_crop_head_embeds_every_pixel_like_the_encoder(presto):
    model, card = presto
    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    b, t, h = 2, 6, 3
    x = torch.cat([_s1_s2(rng, b, t, h), torch.full((b, t, 1, h, h), 420.0)], dim=2)
    x[0, 2:4, 2:] = torch.nan  # two cloudy months in sample 0
    keys = ["s1:VV", "s1:VH", *S2, "elevation:dem"]
    latlon = torch.tensor([[46.0, 14.5], [8.5, 1.2]])
    head = PrestoCrop(model, card, n_classes=3, pixel_chunk=5)
    with torch.no_grad():
        emb = head.embed(x, keys, torch.tensor([4, 9]), latlon)
        logits = head(x, keys, torch.tensor([4, 9]), latlon)
    assert emb.shape == (b, model.dim, h, h) and logits.shape == (b, 3, h, h)
    # Pixel (1, 2) of sample 0 through the encoder alone (flat DEM: slope 0).
    px = torch.cat([x[0, :, :, 1, 2], torch.zeros(t, 1)], dim=1)[None]
    vals, mask = presto_mod.inputs_from_bands(card, px, [*keys, "elevation:slope"])
    with torch.no_grad():
        ref = model(vals, mask, latlon[:1], 4)
    torch.testing.assert_close(emb[0, :, 1, 2], ref[0], atol=1e-5, rtol=0)
    assert mask[0, 2:4, 2].all() and not mask[0, :2, 2].any()
    assert not any(p.requires_grad for p in head.encoder.parameters())
    assert all(p.requires_grad for p in head.head.parameters())


# ------------------------------------------------------------------------------------------------
# eo-fusion model list
# ------------------------------------------------------------------------------------------------


def test_available_encoders_cover_all_kinds():
    infos = {i.name: i for i in available_encoders()}
    assert list(infos) == ["bundled", "galileo-nano", "presto", "smarties"]
    assert infos["galileo-nano"].n_parameters == 1_037_856
    assert infos["presto"].n_parameters == 404_160
    assert "s1:VV" in infos["galileo-nano"].inputs and "elevation:dem" in infos["presto"].inputs
    assert "Sumbul" in infos["smarties"].citation and infos["smarties"].n_parameters is None


def test_model_list_cli(capsys):
    from eo_fusion.cli import main

    assert main(["model", "list"]) == 0
    out = capsys.readouterr().out
    for text in (
        "galileo-nano",
        "1,037,856 parameters",
        "presto",
        "404,160 parameters",
        "MIT",
        "arXiv:2502.09356",
        "arXiv:2304.14065",
        "smarties",
        "import_smarties",
        "bundled",
    ):
        assert text in out
    assert main(["model", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"bundled", "galileo-nano", "presto", "smarties"}
