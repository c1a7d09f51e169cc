"""Checkpoints: safetensors weights + a JSON model card. Nothing is ever unpickled.

A checkpoint is a folder with two files:

* ``model.safetensors``: the weights (stored as float16 or float32, loaded as float32);
* ``model_card.json``: a :class:`~eo_fusion.models.card.ModelCard` (architecture, tasks,
  normalisation, classes, inference window, provenance, metrics, code version and the sha256 of
  the weights file, checked on load).

Parameter names: ``encoder.*`` (pretrained encoder), ``landcover.*`` and ``crops.*`` (task models,
each with its own fine-tuned encoder), ``mae.*`` (pretraining decoder and heads, optional).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from eo_fusion import __version__
from eo_fusion.errors import CheckpointError
from eo_fusion.files import atomic_write_text, sha256_file
from eo_fusion.models.card import CARD_FORMAT, ModelCard, TaskCard, WeightsInfo, parse_card
from eo_fusion.models.encoder import SpectralViT
from eo_fusion.models.heads import CropModel, LandCoverModel
from eo_fusion.models.mae import MAE
from eo_fusion.resources import BUNDLED_MODEL_DIR

WEIGHTS = "model.safetensors"
CARD = "model_card.json"
__all__ = [
    "CARD",
    "CARD_FORMAT",
    "WEIGHTS",
    "LoadedModel",
    "ModelCard",
    "load",
    "read_card",
    "save",
]

#: Where the bundled model lives (inside the installed package).
BUNDLED_DIR = BUNDLED_MODEL_DIR


@dataclass
class LoadedModel:
    """A model ready for inference or further training.

    Attributes:
        card: the model card.
        encoder: the pretrained encoder.
        landcover: the land-cover model, if the checkpoint has one.
        crops: the crop-mapping (temporal) model, if the checkpoint has one.
        mae: the pretraining model (decoder + heads), if kept.
        path: folder the model was loaded from (``None`` if built in memory).
    """

    card: ModelCard
    encoder: SpectralViT
    landcover: LandCoverModel | None = None
    crops: CropModel | None = None
    mae: MAE | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.card, ModelCard):  # a JSON-like mapping: validate it once here
            self.card = ModelCard.model_validate({"format": CARD_FORMAT, **dict(self.card)})

    def task(self, name: str) -> TaskCard:
        """The card's section for task ``name`` (raises naming the tasks it has)."""
        section = self.card.task(name)
        if getattr(self, name, None) is None:
            raise CheckpointError(
                f"model {self.card.name} lists a '{name}' task but holds no '{name}' weights",
                fix="re-export the checkpoint with its task head",
            )
        return section

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


def build(card: ModelCard | Mapping) -> LoadedModel:
    """Instantiate (untrained) modules from the card's ``architecture`` section.

    ``card``: a :class:`ModelCard`, or its JSON form (validated).
    """
    if not isinstance(card, ModelCard):
        card = ModelCard.model_validate({"format": CARD_FORMAT, **dict(card)})
    arch = card.architecture
    cfg = arch.encoder
    encoder = SpectralViT(cfg)
    model = LoadedModel(card=card, encoder=encoder)
    if (lc := arch.landcover) is not None:
        model.landcover = LandCoverModel(
            SpectralViT(cfg), lc.n_classes, lc.take, lc.channels, fusion=lc.fusion, groups=lc.groups
        )
    if (cr := arch.crops) is not None:
        model.crops = CropModel(SpectralViT(cfg), cr.n_classes, cr.take, cr.channels)
    if arch.mae:
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
    card = model.card.updated(
        format=CARD_FORMAT,
        code_version=__version__,
        weights=WeightsInfo(
            file=WEIGHTS,
            sha256=sha256_file(folder / WEIGHTS),
            dtype=str(dtype).removeprefix("torch."),
            n_parameters=int(sum(v.numel() for v in state.values())),
        ),
    )
    atomic_write_text(folder / CARD, card.to_json())
    model.card = card
    return folder


def read_card(folder: Path) -> ModelCard:
    """Read and check a model card (format and every section)."""
    path = Path(folder) / CARD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(
            f"no model card at {path}", fix="point to a folder written by eo-fusion"
        ) from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"model card {path} is not valid JSON ({e})") from e
    return parse_card(data, source=path)


def load(folder: Path | None = None) -> LoadedModel:
    """Load a checkpoint folder (default: the bundled model); verifies the weights' sha256."""
    folder = Path(folder) if folder is not None else BUNDLED_DIR
    card = read_card(folder)
    if card.weights is None:
        raise CheckpointError(f"model card {folder / CARD} names no weights file")
    weights = folder / card.weights.file
    if not weights.is_file():
        raise CheckpointError(f"weights file {weights} is missing", fix="restore the checkpoint")
    digest = sha256_file(weights)
    if digest != card.weights.sha256:
        raise CheckpointError(
            f"weights {weights} do not match the card's sha256 ({digest[:12]}… ≠ "
            f"{card.weights.sha256[:12]}…)",
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
