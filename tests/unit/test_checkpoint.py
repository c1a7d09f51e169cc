"""Checkpoints: safetensors + model card round trip, integrity, no pickle, SMARTIES import."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from eo_fusion.errors import CheckpointError
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.encoder import EncoderConfig, SpectralViT, feature_blocks
from eo_fusion.models.heads import LandCoverModel
from eo_fusion.models.mae import MAE
from eo_fusion.models.spectral import ALL_RANGES

KEYS = ["s2:B02", "s2:B03", "s2:B04", "s2:B08", "s1:VV"]


def _model() -> ck.LoadedModel:
    torch.manual_seed(0)
    cfg = EncoderConfig("nano", 4, 32, ALL_RANGES)
    take = feature_blocks(4)
    card = {
        "name": "t",
        "architecture": {
            "encoder": cfg.to_dict(),
            "landcover": {"n_classes": 4, "take": list(take), "channels": 16},
            "mae": True,
        },
        "tasks": {},
    }
    enc = SpectralViT(cfg)
    lc = LandCoverModel(SpectralViT(cfg), 4, take, 16)
    lc.encoder.load_state_dict(enc.state_dict())
    with torch.no_grad():  # "fine-tune" only the last block: the others are stored once
        lc.encoder.blocks[3].mlp.fc2.weight.add_(0.1)
    return ck.LoadedModel(card=card, encoder=enc, landcover=lc, mae=MAE(enc))


def test_round_trip_gives_identical_outputs(tmp_path):
    m = _model()
    ck.save(m, tmp_path)
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["weights"]["sha256"] == ck.sha256_file(tmp_path / "model.safetensors")
    assert card["code_version"]
    # Unchanged task-encoder tensors are not stored twice; the changed one is.
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert "landcover.encoder.blocks.3.mlp.fc2.weight" in names
    assert "landcover.encoder.blocks.0.attn.qkv.weight" not in names
    back = ck.load(tmp_path)
    x = torch.randn(1, len(KEYS), 32, 32)
    m.landcover.eval()
    with torch.inference_mode():
        assert torch.equal(m.landcover(x, KEYS), back.landcover(x, KEYS))
        assert torch.equal(m.encoder(x, KEYS)[0], back.encoder(x, KEYS)[0])


def test_corrupt_weights_are_refused(tmp_path):
    ck.save(_model(), tmp_path)
    w = tmp_path / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        ck.load(tmp_path)


def test_missing_card_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no model card"):
        ck.load(tmp_path)


def test_no_pickle_anywhere_in_the_model_code():
    root = Path(ck.__file__).resolve().parent.parent
    for path in [*root.joinpath("models").rglob("*.py"), *root.joinpath("train").rglob("*.py")]:
        text = path.read_text()
        assert not re.search(r"^\s*import pickle|from pickle|torch\.save\(", text, re.M), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, path


def _smarties_state(dim=128, depth=4, heads=4, patch=4) -> dict[str, torch.Tensor]:
    """A state dict in the published SMARTIES/MAE layout (timm names), random values."""
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    st = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 65, dim)}
    for i in range(len(ck.SMARTIES_RANGE_ORDER)):
        st[f"spectral_embed.proj.{i}.weight"] = r(dim, patch * patch)  # linear layout
        st[f"spectral_embed.proj.{i}.bias"] = r(dim)
        st[f"decoder_pred.{i}.weight"] = r(patch * patch, 128)
        st[f"decoder_pred.{i}.bias"] = r(patch * patch)
    for i in range(depth):
        p = f"blocks.{i}."
        st |= {
            p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim),
            p + "attn.qkv.weight": r(3 * dim, dim), p + "attn.qkv.bias": r(3 * dim),
            p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
            p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim),
            p + "mlp.fc1.weight": r(4 * dim, dim), p + "mlp.fc1.bias": r(4 * dim),
            p + "mlp.fc2.weight": r(dim, 4 * dim), p + "mlp.fc2.bias": r(dim),
        }  # fmt: skip
    st |= {"norm.weight": 1 + r(dim), "norm.bias": r(dim)}
    st |= {"decoder_embed.weight": r(128, dim), "decoder_embed.bias": r(128)}
    st |= {"mask_token": r(1, 1, 128), "decoder_pos_embed": r(1, 65, 128)}
    for i in range(2):
        p = f"decoder_blocks.{i}."
        st |= {
            p + "norm1.weight": 1 + r(128), p + "norm1.bias": r(128),
            p + "attn.qkv.weight": r(384, 128), p + "attn.qkv.bias": r(384),
            p + "attn.proj.weight": r(128, 128), p + "attn.proj.bias": r(128),
            p + "norm2.weight": 1 + r(128), p + "norm2.bias": r(128),
            p + "mlp.fc1.weight": r(512, 128), p + "mlp.fc1.bias": r(512),
            p + "mlp.fc2.weight": r(128, 512), p + "mlp.fc2.bias": r(128),
        }  # fmt: skip
    st |= {"decoder_norm.weight": 1 + r(128), "decoder_norm.bias": r(128)}
    return st


def test_smarties_layout_is_imported_by_name(tmp_path):
    state = _smarties_state()
    save_file(state, str(tmp_path / "smarties.safetensors"))
    m = ck.import_smarties(tmp_path / "smarties.safetensors", size="nano")
    assert m.encoder.cfg.ranges == ck.SMARTIES_RANGE_ORDER
    red = ck.SMARTIES_RANGE_ORDER.index("red")
    w = m.encoder.embed.proj["red"].weight
    assert torch.equal(w, state[f"spectral_embed.proj.{red}.weight"].reshape(128, 1, 4, 4))
    assert torch.equal(m.encoder.blocks[2].attn.qkv.weight, state["blocks.2.attn.qkv.weight"])
    assert torch.equal(m.mae.heads["sar_vh"].weight, state["decoder_pred.14.weight"])
    assert set(m.card["training"]["dropped"]) == {"cls_token", "pos_embed", "decoder_pos_embed"}
    out, _ = m.encoder(torch.randn(1, 2, 32, 32), ["s2:B04", "s1:VV"])
    assert torch.isfinite(out).all()


def test_unknown_smarties_parameter_is_named():
    state = {"spectral_embed.proj.0.weight": torch.zeros(8, 16), "head.fc.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"head\.fc\.weight"):
        ck.map_smarties_state(state, 4)


def test_bundled_model_card_is_complete():
    card = ck.read_card(ck.BUNDLED_DIR)
    for section in (
        "architecture",
        "tasks",
        "normalization",
        "training",
        "weights",
        "code_version",
    ):
        assert section in card
    lc = card["tasks"]["landcover"]
    assert "s2-l1c" in lc["inputs"]
    assert all({"id", "name", "color"} <= set(c) for c in lc["classes"])
    assert lc["metrics"]["holdout"]["oa"] is not None
    assert (ck.BUNDLED_DIR / "model.safetensors").stat().st_size < 6_000_000
    m = ck.load()
    assert m.landcover is not None and m.crops is not None
