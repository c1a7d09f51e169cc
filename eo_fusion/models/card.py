"""The model card: a typed, immutable description of a checkpoint (``model_card.json``).

Everything needed to rebuild and use a model: the architecture, for each task the modality and
band keys it consumes, the normalisation statistics per modality and band, the classes (id, name,
colour), the inference window, training provenance, metrics, licence and citation, code version
and the sha256 of the weights file. Cards written by earlier versions (normalisation as
``[mean, std]`` pairs, the bundled model's card) load unchanged.

Normalisation of one band (:class:`BandNorm`), from physical units (reflectance 0–1, SAR in dB,
elevation in m, …):

* ``mean``/``std`` only: ``(v - mean) / std``;
* with ``p1``/``p99`` (SMARTIES): ``u = clip((v - p1) / (p99 - p1), 0, 1)``, then
  ``(u - mean) / std`` (``mean``/``std`` are then those of ``u``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator

from eo_fusion.errors import BandError, CheckpointError
from eo_fusion.models.encoder import EncoderConfig

CARD_FORMAT = "eo-fusion-model/1"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BandNorm(_Frozen):
    """Normalisation of one band (see the module docstring); values in physical units."""

    mean: float
    std: float
    p1: float | None = None
    p99: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):  # cards of format 1 store [mean, std]
            if len(v) != 2:
                raise ValueError(f"expected [mean, std], got {v!r}")
            return {"mean": v[0], "std": v[1]}
        return v

    @model_validator(mode="after")
    def _check(self) -> BandNorm:
        if not self.std > 0:
            raise ValueError(f"std must be > 0, got {self.std}")
        if (self.p1 is None) != (self.p99 is None):
            raise ValueError("give both p1 and p99, or neither")
        if self.p1 is not None and not self.p99 > self.p1:  # type: ignore[operator]
            raise ValueError(f"p99 ({self.p99}) must be above p1 ({self.p1})")
        return self

    @model_serializer(mode="plain")
    def _dump(self) -> Any:
        if self.p1 is None:
            return [self.mean, self.std]  # the compact format-1 form, readable by old versions
        return {"mean": self.mean, "std": self.std, "p1": self.p1, "p99": self.p99}


def normalize_bands(
    values: np.ndarray, norms: Sequence[BandNorm], axis: int = -3, *, in_place: bool = False
) -> np.ndarray:
    """Apply one :class:`BandNorm` per band along ``axis`` of ``values`` (float32; NaN stays).

    ``in_place``: overwrite ``values`` (a float32 array the caller owns) instead of returning a
    new array; the values are the same bit for bit. Why: a 576² px tile of 9 bands is 12 MB,
    and each temporary of the two-step formula was one more such copy per tile in flight.
    """
    shape = [1] * np.ndim(values)
    shape[axis] = len(norms)
    v = values if in_place else np.array(values, dtype="float32")
    if in_place and (not isinstance(v, np.ndarray) or v.dtype != np.float32):
        raise TypeError("normalize_bands(in_place=True) needs a float32 numpy array")
    for i, n in enumerate(norms):
        if n.p1 is not None and n.p99 is not None:
            at: list[Any] = [slice(None)] * v.ndim
            at[axis] = i
            band = v[tuple(at)]  # a view: the steps below write into ``v``
            band -= np.float32(n.p1)
            band /= np.float32(n.p99 - n.p1)
            np.clip(band, 0, 1, out=band)
    v -= np.array([n.mean for n in norms], dtype="float32").reshape(shape)
    v /= np.array([n.std for n in norms], dtype="float32").reshape(shape)
    return v


class ClassEntry(_Frozen):
    """One output class."""

    id: int
    name: str
    color: str


class TaskCard(_Frozen):
    """One task head: what it consumes and what it outputs."""

    inputs: dict[str, list[str]]
    optional: list[str] = []
    mode: Literal["composite", "timeseries", "scene"] = "composite"
    classes: list[ClassEntry]
    ignore_index: int = 0
    metrics: dict[str, Any] = {}
    training: dict[str, Any] = {}
    #: a head saved beside the checkpoint rather than in its weights (multi-label scene heads)
    head_file: str | None = None


class HeadArch(_Frozen):
    """Architecture of a task head."""

    n_classes: int
    take: tuple[int, ...]
    channels: int = 64
    #: how modalities meet: early (one token from all bands) or late (per-sensor passes)
    fusion: Literal["early", "late_mean", "late_concat"] = "early"
    #: sensor groups (band-key prefixes) whose features ``late_concat`` concatenates, in order
    groups: tuple[str, ...] = ()


class Architecture(_Frozen):
    """Architecture of every module in the checkpoint."""

    encoder: EncoderConfig
    mae: bool = False
    landcover: HeadArch | None = None
    crops: HeadArch | None = None
    #: multi-label scene head of a training job (weights in ``TaskCard.head_file``)
    scene: HeadArch | None = None


class InferenceSpec(_Frozen):
    """Sliding-window inference settings (pixels)."""

    window: int
    stride: int | None = None


class WeightsInfo(_Frozen):
    """The weights file and its checksum."""

    file: str
    sha256: str
    dtype: str = "float32"
    n_parameters: int = 0


class ModelCard(_Frozen):
    """A checkpoint's card (``model_card.json``); build copies with :meth:`updated`."""

    format: str = CARD_FORMAT
    name: str
    code_version: str = ""
    architecture: Architecture
    tasks: dict[str, TaskCard] = {}
    normalization: dict[str, dict[str, BandNorm]] = {}
    normalization_by_kind: dict[str, BandNorm] = {}
    inference: InferenceSpec | None = None
    training: dict[str, Any] = {}
    weights: WeightsInfo | None = None
    license: str | None = None
    citation: str | None = None

    @property
    def encoder(self) -> EncoderConfig:
        return self.architecture.encoder

    @property
    def window(self) -> int:
        """Inference window edge (px): the card's, else the encoder's training size."""
        return self.inference.window if self.inference else self.encoder.image_size

    def updated(self, **changes: Any) -> ModelCard:
        """A validated copy with top-level fields replaced (nested values as models or dicts)."""
        data = self.model_dump(mode="json")
        data.update({k: _plain(v) for k, v in changes.items()})
        return ModelCard.model_validate(data)

    def task(self, name: str) -> TaskCard:
        """The section of task ``name``.

        Raises:
            CheckpointError: the card has no such task (names the ones it has).
        """
        if name not in self.tasks:
            raise CheckpointError(
                f"model {self.name} has no '{name}' head "
                f"(it has: {', '.join(self.tasks) or 'none'})",
                fix="pick a task the model card lists, or fine-tune one with `eo-fusion finetune`",
            )
        return self.tasks[name]

    def band_norm(self, modality: str | None, key: str) -> BandNorm:
        """Normalisation of band ``key``: of ``modality``, else of the first modality that has
        the band, else of the band's kind.

        Raises:
            BandError: the card has no statistics for the band (names it).
        """
        if modality is not None and key in self.normalization.get(modality, {}):
            return self.normalization[modality][key]
        for per_mod in self.normalization.values():
            if key in per_mod:
                return per_mod[key]
        from eo_fusion.models.spectral import resolve_band

        kind = resolve_band(key).kind
        if kind in self.normalization_by_kind:
            return self.normalization_by_kind[kind]
        raise BandError(
            f"band '{key}' (kind '{kind}') has no normalisation statistics in the model card "
            f"of {self.name}",
            fix="drop the band or fine-tune a model on data that has it",
        )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"


def _plain(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    if isinstance(v, EncoderConfig):
        return v.to_dict()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def parse_card(data: Any, *, source: str | Path) -> ModelCard:
    """Validate a card's JSON value (format 1, including the bundled model's card).

    Raises:
        CheckpointError: wrong format or invalid content (names the file and the field).
    """
    if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"model card {source} has format {got!r}, expected {CARD_FORMAT!r}",
            fix="re-export the checkpoint with this version of eo-fusion",
        )
    try:
        return ModelCard.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(
            f"model card {source}: {where}: {first['msg']} ({e.error_count()} error(s))",
            fix="fix the card or re-export the checkpoint with this version of eo-fusion",
        ) from e
