"""Checkpoints: safetensors + model card round trip, integrity, no pickle, SMARTIES import."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

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


# SMARTIES import (published key names, exact tokens against the reference code):
# tests/unit/test_smarties.py.


def test_bundled_model_card_is_complete():
    card = ck.read_card(ck.BUNDLED_DIR)
    assert isinstance(card, ck.ModelCard)
    for section in ("tasks", "normalization", "training", "weights", "code_version"):
        assert getattr(card, section), section
    assert card.architecture.landcover is not None and card.architecture.crops is not None
    lc = card.task("landcover")
    assert "s2-l1c" in lc.inputs
    assert all(c.id and c.name and c.color for c in lc.classes)
    assert lc.metrics["holdout"]["oa"] is not None
    # The loader accepts the format-1 file as it is: [mean, std] pairs and all.
    raw = json.loads((ck.BUNDLED_DIR / ck.CARD).read_text())
    assert raw["normalization"]["s2-l1c"]["s2:B04"] == [
        card.normalization["s2-l1c"]["s2:B04"].mean,
        card.normalization["s2-l1c"]["s2:B04"].std,
    ]
    assert (ck.BUNDLED_DIR / "model.safetensors").stat().st_size < 6_000_000
    m = ck.load()
    assert m.landcover is not None and m.crops is not None


def test_card_is_validated_on_read_and_names_the_bad_field(tmp_path):
    raw = json.loads((ck.BUNDLED_DIR / ck.CARD).read_text())
    (tmp_path / ck.CARD).write_text(json.dumps({**raw, "normalisation": {}}))
    with pytest.raises(CheckpointError, match="normalisation"):
        ck.read_card(tmp_path)
    raw["normalization"]["s2-l1c"]["s2:B04"] = [0.1, 0.0]
    (tmp_path / ck.CARD).write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"normalization\.s2-l1c\.s2:B04.*std must be > 0"):
        ck.read_card(tmp_path)
    card = ck.read_card(ck.BUNDLED_DIR)
    with pytest.raises(Exception, match="frozen"):
        card.name = "changed"  # type: ignore[misc]
    assert card.updated(name="changed").name == "changed" and card.name == "eo-fusion-sample"
