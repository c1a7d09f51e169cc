"""Which pretrained encoders eo-fusion can use, and loading the published ones shipped offline.

Three kinds of encoder exist:

* the bundled eo-fusion model (``eo_fusion/data/model``, see :mod:`eo_fusion.models.checkpoint`);
* published encoders converted once to safetensors + a model card and shipped as package data
  under ``eo_fusion/data/encoders/<name>/`` (Galileo-nano, Presto; MIT, with their LICENSE);
* SMARTIES checkpoints, which are not shipped and are imported from a file or the Hugging Face
  Hub (:func:`eo_fusion.models.import_smarties`).

:func:`load_encoder` builds a published encoder from its folder; the weights file's sha256 is
checked against the card, and nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from eo_fusion.errors import CheckpointError
from eo_fusion.files import sha256_file
from eo_fusion.models.galileo import GalileoConfig, GalileoEncoder
from eo_fusion.models.presto import PrestoConfig, PrestoEncoder

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ENCODERS_DIR = DATA_DIR / "encoders"
BUNDLED_MODEL_DIR = DATA_DIR / "model"
CARD = "model_card.json"
CARD_FORMAT = "eo-fusion-encoder/1"
PUBLISHED = ("galileo-nano", "presto")

SMARTIES_CITATION = (
    "Sumbul, G., Xu, C., Dalsasso, E., Tuia, D. (2025). SMARTIES: Spectrum-Aware Multi-Sensor "
    "Auto-Encoder for Remote Sensing Images. arXiv:2506.19585."
)


@dataclass(frozen=True)
class EncoderInfo:
    """One line of ``eo-fusion model list``.

    Attributes:
        name: the name to load it by.
        title: what it is.
        inputs: the bands / modalities it takes.
        n_parameters: number of weights (``None`` where not shipped).
        license: licence of the weights.
        citation: the paper to cite.
        source: where it comes from (path, repository or how to import it).
    """

    name: str
    title: str
    inputs: str
    n_parameters: int | None
    license: str
    citation: str
    source: str


def read_card(name: str) -> dict[str, Any]:
    """The model card of the published encoder ``name`` (``galileo-nano``, ``presto``)."""
    folder = encoder_dir(name)
    try:
        card = json.loads((folder / CARD).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"cannot read the model card of encoder '{name}' at {folder / CARD}: {e}",
            fix="reinstall eo-fusion or rerun tools/convert_encoders.py",
        ) from e
    if card.get("format") != CARD_FORMAT:
        raise CheckpointError(
            f"{folder / CARD} has format {card.get('format')!r}, expected {CARD_FORMAT!r}",
            fix="rerun tools/convert_encoders.py",
        )
    return card


def encoder_dir(name: str) -> Path:
    if name not in PUBLISHED:
        raise CheckpointError(
            f"unknown encoder '{name}' (shipped: {', '.join(PUBLISHED)})",
            fix="see `eo-fusion model list`",
        )
    return ENCODERS_DIR / name


def load_encoder(name: str) -> tuple[GalileoEncoder | PrestoEncoder, dict[str, Any]]:
    """Build the published encoder ``name`` with its shipped weights, in eval mode.

    Returns:
        ``(encoder, card)``; the card carries band groups, registry keys, unit conversions,
        normalisation, licence and citation.

    Raises:
        CheckpointError: unknown name, missing/corrupt files, or weights that do not fit.
    """
    card = read_card(name)
    folder = encoder_dir(name)
    path = folder / card["weights"]["file"]
    if not path.is_file() or sha256_file(path) != card["weights"]["sha256"]:
        raise CheckpointError(
            f"weights of encoder '{name}' at {path} are missing or do not match the card's sha256",
            fix="reinstall eo-fusion or rerun tools/convert_encoders.py",
        )
    model: GalileoEncoder | PrestoEncoder
    if card["family"] == "galileo":
        model = GalileoEncoder(GalileoConfig.from_card(card))
    elif card["family"] == "presto":
        model = PrestoEncoder(PrestoConfig.from_card(card))
    else:
        raise CheckpointError(f"{folder / CARD}: unknown encoder family {card['family']!r}")
    state = load_file(str(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"weights of encoder '{name}' do not fit its architecture: {e}",
            fix="rerun tools/convert_encoders.py",
        ) from e
    return model.eval(), card


def registry_inputs(card: dict[str, Any]) -> str:
    """The card's band groups that registry bands can fill, with their keys."""
    groups = card["groups"]
    flat = [g for kind in groups.values() for g in kind] if isinstance(groups, dict) else groups
    names = {b["name"]: b for b in card.get("bands", [])}
    parts = []
    for g in flat:
        bands = [b if isinstance(b, dict) else names[b] for b in g["bands"]]
        keys = []
        for b in bands:
            if b.get("key"):
                keys.append(b["key"] + (" (or derived)" if b.get("derive") else ""))
            elif b.get("derive") == "ndvi":
                keys.append("NDVI from s2:B08 + s2:B04")
        if len(keys) == len(bands):
            parts.append(f"{g['name']} [{', '.join(keys)}]")
    return "; ".join(parts)


def _bundled_info() -> EncoderInfo:
    card = json.loads((BUNDLED_MODEL_DIR / CARD).read_text())
    enc = card.get("architecture", {}).get("encoder", {})
    tasks = card.get("tasks", {}).values()
    inputs = sorted({k for t in tasks for ks in t.get("inputs", {}).values() for k in ks})
    ranges = ", ".join(enc.get("ranges", []))
    return EncoderInfo(
        name="bundled",
        title=f"{card.get('name', 'eo-fusion model')} (eo-fusion spectral ViT-"
        f"{enc.get('size', '?')}, patch {enc.get('patch_size', '?')} px)",
        inputs=f"any registry band in its wavelength ranges ({ranges}); tasks use "
        f"{', '.join(inputs)}",
        n_parameters=card.get("weights", {}).get("n_parameters"),
        license="Apache-2.0 (eo-fusion)",
        citation="eo-fusion; SMARTIES-style architecture: " + SMARTIES_CITATION,
        source=str(BUNDLED_MODEL_DIR),
    )


def _published_info(name: str) -> EncoderInfo:
    card = read_card(name)
    return EncoderInfo(
        name=name,
        title=card["title"],
        inputs=f"{card['inputs']['summary']}. Registry bands: {registry_inputs(card)}",
        n_parameters=card["weights"]["n_parameters"],
        license=f"{card['license']['spdx']} ({encoder_dir(name) / card['license']['file']})",
        citation=card["citation"],
        source=f"{card['source']['repository']} @ {card['source']['commit'][:10]}",
    )


def available_encoders() -> list[EncoderInfo]:
    """Every encoder eo-fusion can use, bundled and published first, then SMARTIES import."""
    out = [_bundled_info()] + [_published_info(n) for n in PUBLISHED]
    out.append(
        EncoderInfo(
            name="smarties",
            title="SMARTIES ViT-B / ViT-L (not shipped; imported on demand)",
            inputs="any band with a SMARTIES spectral range (S2 L2A, S1 VV/VH, RGB, ...)",
            n_parameters=None,
            license="Apache-2.0 (gsumbul/SMARTIES)",
            citation=SMARTIES_CITATION,
            source="eo_fusion.models.import_smarties(<file.safetensors> or "
            "hf://gsumbul/SMARTIES-v1-ViT-B)",
        )
    )
    return out
