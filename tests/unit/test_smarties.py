"""SMARTIES compatibility: published layouts and names, exact tokens against the reference code.

The fixture in tests/fixtures/smarties/ was written by tools/smarties_fixture.py, which runs the
reference implementation (gsumbul/SMARTIES) on random weights; see that script's docstring.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from eo_fusion import api
from eo_fusion.errors import BadInputError, BandError, CheckpointError
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.smarties import (
    SMARTIES_NORMALIZATION,
    from_smarties_state,
    infer_config,
    map_smarties_state,
)
from eo_fusion.models.spectral import SMARTIES_RANGES

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "smarties"
CASES = json.loads((FIX / "cases.json").read_text())["cases"]
TENSORS = load_file(FIX / "cases.safetensors")


@pytest.fixture(scope="module", params=["vit", "mae"])
def imported(request):
    return request.param, api.import_smarties(FIX / f"{request.param}.safetensors")


@pytest.mark.parametrize("case", sorted(CASES))
def test_tokens_equal_the_reference_implementation(imported, case):
    layout, model = imported
    bands = CASES[case]["bands"]
    ref = TENSORS[f"{case}.tokens_{layout}"].numpy()
    from_normalized = api.embed(
        model, TENSORS[f"{case}.normalized"].numpy(), bands, normalized=True
    )
    from_physical = api.embed(model, TENSORS[f"{case}.physical"].numpy(), bands)
    assert from_normalized.shape == ref.shape == (2, 1 + 16, 128)  # CLS first
    assert np.abs(from_normalized - ref).max() < 1e-4
    assert np.abs(from_physical - ref).max() < 1e-4


def test_channel_order_does_not_matter(imported):
    _, model = imported
    bands = CASES["subset"]["bands"]
    x = TENSORS["subset.physical"].numpy()
    perm = [3, 0, 4, 1, 2]
    a = api.embed(model, x, bands)
    b = api.embed(model, np.ascontiguousarray(x[:, perm]), [bands[i] for i in perm])
    assert np.abs(a - b).max() < 1e-4


def test_published_names_map_to_the_projection_of_each_range():
    state = load_file(FIX / "mae.safetensors")
    m = api.import_smarties(FIX / "mae.safetensors")
    assert m.encoder.cfg.ranges == tuple(r.name for r in SMARTIES_RANGES)
    # Index 6 is SMARTIES's Sentinel-2 red (B04), 15/16 are VV/VH.
    assert [a.ranges for a in m.encoder.embed.assignments(["s2:B04", "s1:VV", "s1:VH"])] == [
        ("red_2",),
        ("microwave_1",),
        ("microwave_2",),
    ]
    w = state["spectrum_projection.spectrum_embeds.6.proj.weight"].reshape(128, 1, 4, 4)
    assert torch.equal(m.encoder.embed.proj["red_2"].weight, w)
    assert torch.equal(m.mae.heads["microwave_2"].weight, state["decoder_preds.16.weight"])
    assert torch.equal(m.encoder.pos_embed, state["pos_embed"])
    assert torch.equal(m.encoder.cls_token, state["cls_token"])
    assert m.card.training["dropped"] == ["decoder_pos_embed"]
    assert m.encoder.cfg.projection_scaler == 12
    assert m.card.citation and "Sumbul" in m.card.citation


def _shapes(dim: int, depth: int, decoder: bool) -> dict[str, torch.Tensor]:
    """A published-size state dict of empty meta tensors (no memory): shapes only."""

    def t(*shape):
        return torch.empty(*shape, device="meta")

    st = {"cls_token": t(1, 1, dim), "pos_embed": t(1, 197, dim)}
    for i in range(17):
        st[f"spectrum_projection.spectrum_embeds.{i}.proj.weight"] = t(dim, 256)
    for i in range(depth):
        st[f"blocks.{i}.norm1.weight"] = t(dim)
        st[f"blocks.{i}.mlp.fc1.weight"] = t(4 * dim, dim)
    if decoder:
        st["decoder_embed.weight"] = t(512, dim)
        st |= {f"decoder_blocks.{i}.norm1.weight": t(512) for i in range(8)}
    return st


@pytest.mark.parametrize(("dim", "depth", "heads"), [(768, 12, 12), (1024, 24, 16), (384, 6, 6)])
def test_size_is_inferred_from_the_tensors(dim, depth, heads):
    cfg = infer_config(_shapes(dim, depth, decoder=True))
    s = cfg.shape
    assert (s.dim, s.depth, s.heads) == (dim, depth, heads)
    assert (s.decoder_dim, s.decoder_depth, s.decoder_heads) == (512, 8, 16)
    assert (cfg.patch_size, cfg.image_size, cfg.mlp_ratio) == (16, 224, 4.0)


def test_unknown_parameter_is_named():
    state = load_file(FIX / "vit.safetensors")
    state["blocks.0.ls1.gamma"] = torch.ones(128)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.ls1\.gamma"):
        from_smarties_state(state)
    cfg = infer_config(load_file(FIX / "vit.safetensors"))
    with pytest.raises(CheckpointError, match=r"'weird'"):
        map_smarties_state({"weird": torch.zeros(1)}, cfg)


def test_wrapped_keys_and_not_a_smarties_file(tmp_path):
    state = load_file(FIX / "vit.safetensors")
    save_file({f"model.{k}": v for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    m = api.import_smarties(tmp_path)  # a folder with one file; the prefix is found and removed
    x = TENSORS["s1.normalized"].numpy()
    ref = TENSORS["s1.tokens_vit"].numpy()
    assert np.abs(api.embed(m, x, ["s1:VV", "s1:VH"], normalized=True) - ref).max() < 1e-4
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match=r"2 \.safetensors files"):
        api.import_smarties(tmp_path)
    with pytest.raises(CheckpointError, match="not a SMARTIES checkpoint"):
        api.import_smarties(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        api.import_smarties(tmp_path / "missing.safetensors")


def _hub_cache(root: Path, repo: str) -> Path:
    """A Hugging Face cache folder laid out as huggingface_hub writes it (refs + snapshots)."""
    commit = "0" * 40
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    shutil.copy(FIX / "vit.safetensors", snap / "smarties-v1-vitb.safetensors")
    # A second weights file (e.g. a transformers export) must not be picked instead.
    save_file({"other": torch.zeros(1)}, str(snap / "model.safetensors"))
    return root


def test_hugging_face_id_loads_from_the_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _hub_cache(tmp_path / "hub", "gsumbul/SMARTIES-v1-ViT-B")
    m = api.import_smarties("hf://gsumbul/SMARTIES-v1-ViT-B", cache_dir=cache)
    ref = TENSORS["s2_l2a.tokens_vit"].numpy()
    got = api.embed(m, TENSORS["s2_l2a.physical"].numpy(), CASES["s2_l2a"]["bands"])
    assert np.abs(got - ref).max() < 1e-4
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set and the model is not"):
        api.import_smarties("hf://gsumbul/SMARTIES-v1-ViT-L", cache_dir=cache)


def test_hugging_face_id_without_network_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(CheckpointError, match="cannot fetch SMARTIES model hf://gsumbul/X-Y"):
        api.import_smarties("hf://gsumbul/X-Y", cache_dir=tmp_path)
    with pytest.raises(CheckpointError, match="not a Hugging Face model id"):
        api.import_smarties("hf://just-a-name", cache_dir=tmp_path)


def test_embed_refuses_bad_input_by_name(imported):
    _, m = imported
    x = TENSORS["s1.physical"].numpy()
    with pytest.raises(BandError, match="2 channels but 1 band"):
        api.embed(m, x, ["s1:VV"])
    with pytest.raises(BadInputError, match="float32"):
        api.embed(m, x.astype("float64"), ["s1:VV", "s1:VH"])
    bad = x.copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(BadInputError, match="1 infinite"):
        api.embed(m, bad, ["s1:VV", "s1:VH"])


def test_embed_masks_missing_pixels(imported):
    """NaN pixels are masked, never propagated: a whole missing patch and a missing pixel give
    finite tokens of the usual shape, different from the complete input's."""
    _, m = imported
    x = TENSORS["s1.physical"].numpy()
    p = m.encoder.cfg.patch_size
    a = x.copy()
    a[0, :, :p, :p] = np.nan  # one whole patch missing
    a[0, 0, p, p] = np.nan  # and one pixel of the next patch row
    full = api.embed(m, x, ["s1:VV", "s1:VH"])
    tok = api.embed(m, a, ["s1:VV", "s1:VH"])
    assert tok.shape == full.shape and np.isfinite(tok).all()
    assert not np.allclose(tok[0], full[0]) and np.allclose(tok[1:], full[1:], atol=1e-5)
    with pytest.raises(BandError, match="elevation:dem"):
        api.embed(m, x, ["s1:VV", "elevation:dem"])
    with pytest.raises(BandError, match="s1:HH"):
        api.embed(m, x, ["s1:VV", "s1:HH"])
    # S2 B10 has no SMARTIES projection: blended from the two nearest trained ranges.
    (b10,) = m.encoder.embed.assignments(["s2:B10"])
    assert b10.ranges == ("short_wave_infrared_1", "short_wave_infrared_3")


def test_card_normalisation_is_smarties_percentile_clip_then_standardise(tmp_path):
    m = api.import_smarties(FIX / "vit.safetensors")
    b04 = m.card.band_norm(None, "s2:B04")  # L2A statistics by default
    assert b04 == SMARTIES_NORMALIZATION["s2-l2a"]["s2:B04"]
    assert b04.p1 == pytest.approx(12.495476066364853e-4)
    assert m.card.band_norm("s2-l1c", "s2:B04").p99 == pytest.approx(3989.2347558003903e-4)
    # The imported model round-trips through our checkpoint format, statistics included.
    ck.save(m, tmp_path)
    back = ck.load(tmp_path)
    assert back.card.normalization == m.card.normalization
    x = TENSORS["subset.physical"].numpy()
    bands = CASES["subset"]["bands"]
    assert np.abs(api.embed(back, x, bands) - api.embed(m, x, bands)).max() == 0
