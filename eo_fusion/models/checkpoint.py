"""Checkpoints: safetensors weights + a JSON model card. Nothing is ever unpickled.

A checkpoint is a folder with two files:

* ``model.safetensors``: the weights (stored as float16 or float32, loaded as float32);
* ``model_card.json``: everything needed to rebuild and use the model: the architecture, for each
  task the modality and band keys it consumes, normalisation statistics per modality and band,
  classes (id, name, colour), the inference window, training data and provenance, metrics, code
  version and the sha256 of the weights file (checked on load).

Parameter names: ``encoder.*`` (pretrained encoder), ``landcover.*`` and ``crops.*`` (task models,
each with its own fine-tuned encoder), ``mae.*`` (pretraining decoder and heads, optional).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from eo_fusion import __version__
from eo_fusion.errors import CheckpointError
from eo_fusion.files import atomic_write_text, sha256_file
from eo_fusion.models.encoder import EncoderConfig, SpectralViT
from eo_fusion.models.heads import CropModel, LandCoverModel
from eo_fusion.models.mae import MAE
from eo_fusion.resources import BUNDLED_MODEL_DIR

WEIGHTS = "model.safetensors"
CARD = "model_card.json"
CARD_FORMAT = "eo-fusion-model/1"

#: Where the bundled model lives (inside the installed package).
BUNDLED_DIR = BUNDLED_MODEL_DIR


@dataclass
class LoadedModel:
    """A model ready for inference or further training.

    Attributes:
        card: the model card (a JSON-compatible dict).
        encoder: the pretrained encoder.
        landcover: the land-cover model, if the checkpoint has one.
        crops: the crop-mapping (temporal) model, if the checkpoint has one.
        mae: the pretraining model (decoder + heads), if kept.
        path: folder the model was loaded from (``None`` if built in memory).
    """

    card: dict[str, Any]
    encoder: SpectralViT
    landcover: LandCoverModel | None = None
    crops: CropModel | None = None
    mae: MAE | None = None
    path: Path | None = None

    def task(self, name: str) -> dict[str, Any]:
        """The card's section for task ``name`` (raises naming the tasks it has)."""
        tasks = self.card.get("tasks", {})
        if name not in tasks or getattr(self, name, None) is None:
            raise CheckpointError(
                f"model {self.card.get('name', self.path)} has no '{name}' head "
                f"(it has: {', '.join(tasks) or 'none'})",
                fix="pick a task the model card lists, or fine-tune one with `eo-fusion finetune`",
            )
        return tasks[name]

    def modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"encoder": self.encoder}
        for name in ("landcover", "crops", "mae"):
            m = getattr(self, name)
            if m is not None:
                mods[name] = m
        return mods

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat prefixed weights; task-encoder tensors equal to the pretrained encoder's (frozen
        blocks) are stored once, under ``encoder.``, and restored from there on load."""
        base = self.encoder.state_dict()
        out = {}
        for prefix, mod in self.modules().items():
            for k, v in mod.state_dict().items():
                if prefix != "encoder" and k.startswith("encoder."):
                    own = k[len("encoder.") :]
                    if prefix == "mae" or (own in base and torch.equal(base[own], v)):
                        continue
                out[f"{prefix}.{k}"] = v
        return out


def build(card: Mapping[str, Any]) -> LoadedModel:
    """Instantiate (untrained) modules from the card's ``architecture`` section."""
    arch = card["architecture"]
    cfg = EncoderConfig.from_dict(arch["encoder"])
    encoder = SpectralViT(cfg)
    model = LoadedModel(card=dict(card), encoder=encoder)
    if (lc := arch.get("landcover")) is not None:
        model.landcover = LandCoverModel(
            SpectralViT(cfg), lc["n_classes"], lc["take"], lc.get("channels", 64)
        )
    if (cr := arch.get("crops")) is not None:
        model.crops = CropModel(
            SpectralViT(cfg), cr["n_classes"], cr["take"], cr.get("channels", 64)
        )
    if arch.get("mae"):
        model.mae = MAE(encoder)
    return model


def save(model: LoadedModel, folder: Path, *, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model.safetensors`` and ``model_card.json`` into ``folder`` (atomically, each)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    tmp = folder / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp), metadata={"format": CARD_FORMAT})
    os.replace(tmp, folder / WEIGHTS)
    card = dict(model.card)
    card["format"] = CARD_FORMAT
    card["code_version"] = __version__
    card["weights"] = {
        "file": WEIGHTS,
        "sha256": sha256_file(folder / WEIGHTS),
        "dtype": str(dtype).removeprefix("torch."),
        "n_parameters": int(sum(v.numel() for v in state.values())),
    }
    atomic_write_text(folder / CARD, json.dumps(card, indent=2, sort_keys=False) + "\n")
    model.card = card
    return folder


def read_card(folder: Path) -> dict[str, Any]:
    """Read and check a model card (format and required sections)."""
    path = Path(folder) / CARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(
            f"no model card at {path}", fix="point to a folder written by eo-fusion"
        ) from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"model card {path} is not valid JSON ({e})") from e
    if card.get("format") != CARD_FORMAT or "architecture" not in card:
        raise CheckpointError(
            f"model card {path} has format {card.get('format')!r}, expected {CARD_FORMAT!r}",
            fix="re-export the checkpoint with this version of eo-fusion",
        )
    return card


def load(folder: Path | None = None) -> LoadedModel:
    """Load a checkpoint folder (default: the bundled model); verifies the weights' sha256."""
    folder = Path(folder) if folder is not None else BUNDLED_DIR
    card = read_card(folder)
    weights = folder / card["weights"]["file"]
    if not weights.is_file():
        raise CheckpointError(f"weights file {weights} is missing", fix="restore the checkpoint")
    digest = sha256_file(weights)
    if digest != card["weights"]["sha256"]:
        raise CheckpointError(
            f"weights {weights} do not match the card's sha256 ({digest[:12]}… ≠ "
            f"{card['weights']['sha256'][:12]}…)",
            fix="the file is corrupt or was replaced; restore it or regenerate the checkpoint",
        )
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(weights).items()}
    model = build(card)
    load_into(model, state, source=str(weights))
    model.path = folder
    for m in model.modules().values():
        m.eval()
    return model


def load_into(model: LoadedModel, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load a flat prefixed state dict into ``model``'s modules (all keys must match).

    Task-encoder tensors absent from ``state`` are taken from the pretrained ``encoder.*`` ones
    (see :meth:`LoadedModel.state_dict`).
    """
    base = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    for prefix, mod in model.modules().items():
        sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        if prefix != "encoder":
            for k, v in base.items():
                sub.setdefault(f"encoder.{k}", v)
        try:
            mod.load_state_dict(sub, strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"{source}: weights do not fit the '{prefix}' architecture of the card ({e})",
                fix="the card and weights come from different models",
            ) from e


# ------------------------------------------------------------------------------------------------
# Import of published SMARTIES weights (ViT-B/16, ViT-L/16).
# ------------------------------------------------------------------------------------------------

#: Order of the spectral projections in the SMARTIES checkpoint (index -> our range name). This
#: follows the band-group order of the SMARTIES paper (Sentinel-2 bands by wavelength, then SAR VV
#: and VH); check it against the released configuration before trusting imported weights.
SMARTIES_RANGE_ORDER: tuple[str, ...] = (
    "coastal",
    "blue",
    "green",
    "red",
    "red_edge_1",
    "red_edge_2",
    "red_edge_3",
    "nir_broad",
    "nir_narrow",
    "water_vapour",
    "cirrus",
    "swir_1",
    "swir_2",
    "sar_vv",
    "sar_vh",
)

#: Parameter-name mapping (regex on the published name -> our name). Blocks and the final norm
#: use the common ViT/MAE layout; the per-range projections are ``spectral_embed.proj.<i>``.
_SMARTIES_RULES: tuple[tuple[str, str], ...] = (
    (r"^blocks\.(\d+)\.(.*)$", r"encoder.blocks.\1.\2"),
    (r"^norm\.(weight|bias)$", r"encoder.norm.\1"),
    (r"^decoder_embed\.(weight|bias)$", r"mae.decoder_embed.\1"),
    (r"^decoder_blocks\.(\d+)\.(.*)$", r"mae.decoder_blocks.\1.\2"),
    (r"^decoder_norm\.(weight|bias)$", r"mae.decoder_norm.\1"),
    (r"^mask_token$", r"mae.mask_token"),
)
#: Published parameters without a counterpart here: the class token (dense tasks do not use
#: it) and the fixed sin-cos position tables (recomputed for every grid size).
_SMARTIES_DROPPED = re.compile(r"^(cls_token|pos_embed|decoder_pos_embed)$")
_SMARTIES_PROJ = re.compile(r"^spectral_embed\.proj\.(\d+)\.(weight|bias)$")
_SMARTIES_PRED = re.compile(r"^decoder_pred\.(\d+)\.(weight|bias)$")


def map_smarties_state(
    state: Mapping[str, torch.Tensor], patch_size: int
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a SMARTIES state dict to ours; returns (mapped, names dropped on purpose).

    Projections stored as linear layers ``(D, p*p)`` are reshaped to convolutions ``(D, 1, p, p)``.

    Raises:
        CheckpointError: a parameter name matches no rule (named in the message).
    """
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for name, value in state.items():
        if _SMARTIES_DROPPED.match(name):
            dropped.append(name)
            continue
        if m := _SMARTIES_PROJ.match(name):
            rng = _range_at(int(m.group(1)), name)
            if m.group(2) == "weight" and value.dim() == 2:
                value = value.reshape(value.shape[0], 1, patch_size, patch_size)
            out[f"encoder.embed.proj.{rng}.{m.group(2)}"] = value
            continue
        if m := _SMARTIES_PRED.match(name):
            out[f"mae.heads.{_range_at(int(m.group(1)), name)}.{m.group(2)}"] = value
            continue
        for pattern, repl in _SMARTIES_RULES:
            if re.match(pattern, name):
                out[re.sub(pattern, repl, name)] = value
                break
        else:
            raise CheckpointError(
                f"SMARTIES parameter '{name}' has no counterpart in eo-fusion",
                fix="extend _SMARTIES_RULES in eo_fusion/models/checkpoint.py for this layout",
            )
    return out, dropped


def _range_at(i: int, name: str) -> str:
    if i >= len(SMARTIES_RANGE_ORDER):
        raise CheckpointError(f"SMARTIES parameter '{name}': projection index {i} is unknown")
    return SMARTIES_RANGE_ORDER[i]


def import_smarties(weights: Path, *, size: str, image_size: int = 224) -> LoadedModel:
    """Build a :class:`LoadedModel` (encoder + MAE) from a published SMARTIES safetensors file."""
    state = load_file(Path(weights))
    return from_smarties_state(state, size=size, image_size=image_size, source=str(weights))


def from_smarties_state(
    state: Mapping[str, torch.Tensor], *, size: str, image_size: int = 224, source: str = "state"
) -> LoadedModel:
    """As :func:`import_smarties`, from an in-memory state dict."""
    proj = next((v for k, v in state.items() if _SMARTIES_PROJ.match(k) and k.endswith("weight")))
    patch = round((proj[0].numel()) ** 0.5)
    mapped, dropped = map_smarties_state(state, patch)
    with_mae = any(k.startswith("mae.") for k in mapped)
    card = {
        "name": f"smarties-{size}",
        "architecture": {
            "encoder": EncoderConfig(
                size=size, patch_size=patch, image_size=image_size, ranges=SMARTIES_RANGE_ORDER
            ).to_dict(),
            "mae": with_mae,
        },
        "tasks": {},
        "training": {"source": source, "imported_from": "SMARTIES", "dropped": dropped},
    }
    model = build(card)
    if with_mae:  # the MAE state in ours also holds its own code projection: keep it fresh
        assert model.mae is not None
        for k, v in model.mae.state_dict().items():
            if k.startswith("code_proj."):
                mapped[f"mae.{k}"] = v
    load_into(model, mapped, source=source)
    return model
