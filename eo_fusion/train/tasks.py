"""Training tasks over chips: per-pixel segmentation and per-field (parcel) classification.

Both train the fine-tuning code's dense models (:class:`~eo_fusion.models.heads.LandCoverModel`
on composites, :class:`~eo_fusion.models.heads.CropModel` on time series), which give per-pixel
logits ``(B, K, H, W)``:

* ``segmentation``: cross-entropy per labelled pixel;
* ``parcel``: one sample per (chip, field); the logits are averaged over the field's labelled
  pixels in the chip (pixels pooled inside the polygon) and scored against the field's class.
  At evaluation the class probabilities of every chip of a field are averaged, so each field
  gets one prediction and counts once.

Losses return ``(sum, weight)`` so that data-parallel processes can divide by the global weight
(see :mod:`eo_fusion.train.loop`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from eo_fusion.errors import BadInputError
from eo_fusion.models.encoder import SpectralViT
from eo_fusion.models.heads import union_dates
from eo_fusion.train.datasets import ChipDataset
from eo_fusion.train.finetune import drop_modalities
from eo_fusion.train.metrics import confusion, scores
from eo_fusion.train.pretrain import augment

#: Fields with fewer labelled pixels in a chip are not parcel samples of that chip.
MIN_PARCEL_PIXELS = 4


@dataclass
class ChipArrays:
    """A split's chips in memory: inputs concatenated over modalities (standardised, NaN kept)."""

    ids: list[str]
    x: np.ndarray
    keys: list[str]
    doy: np.ndarray | None
    label: np.ndarray
    field: np.ndarray
    #: channel indices of each input modality (what modality dropout drops together)
    groups: tuple[tuple[int, ...], ...] = ()

    @property
    def temporal(self) -> bool:
        return self.doy is not None


def _chip_input(sample: dict[str, Any], mods: Sequence[str], temporal: bool) -> np.ndarray:
    """One chip's input: composites concatenated over bands, or the time series of every
    modality over the union of their own dates (:func:`~eo_fusion.models.heads.union_dates`)."""
    if not temporal:
        return np.concatenate([sample["inputs"][m].numpy() for m in mods], axis=-3)
    parts = [
        (sample["inputs"][m].numpy(), sample["dates"][m].numpy().astype("datetime64[D]"))
        for m in mods
    ]
    return union_dates(parts)[0]


def chip_arrays(ds: ChipDataset) -> ChipArrays:
    """Stack a :class:`ChipDataset` into arrays; time series and composites cannot be mixed.

    Several time-series modalities keep their own dates: each chip's rows are the union of
    their dates (NaN in the other modalities' channels), with one day of year per row.
    """
    if not len(ds):
        raise BadInputError(
            f"no usable chips in split {ds.split!r} of {ds.run_dir}",
            fix="draw more chips (sampling.chips_per_class) or more blocks",
        )
    first = ds[0]
    temporal = {m: m in first["doy"] for m in ds.inputs}
    if len(set(temporal.values())) > 1:
        raise BadInputError(
            f"inputs {list(ds.inputs)} mix time series and composites",
            fix="give only time-series modalities, or only composites",
        )
    series = any(temporal.values())
    mods = list(ds.inputs)
    xs, labels, fields = [], [], []
    for i in range(len(ds)):
        s = ds[i]
        xs.append(_chip_input(s, mods, series))
        labels.append(s["mask"].numpy())
        fields.append(s["field"].numpy())
    doy = None
    if series:
        days = np.concatenate([first["dates"][m].numpy() for m in mods]).astype("datetime64[D]")
        doy = pd.DatetimeIndex(np.sort(days, kind="stable")).day_of_year.values.astype("float32")
    keys = [k for m in mods for k in ds.inputs[m]]
    widths = np.cumsum([0] + [len(ds.inputs[m]) for m in mods])
    groups = tuple(tuple(range(int(a), int(b))) for a, b in itertools.pairwise(widths))
    return ChipArrays(
        list(ds.ids), np.stack(xs), keys, doy, np.stack(labels), np.stack(fields), groups
    )


def sample_rng(seed: int, step: int, position: int) -> np.random.Generator:
    """The augmentation RNG of one sample of one step (same on every process)."""
    return np.random.default_rng([seed, step, position])


class SegmentationTask:
    """Per-pixel classes; samples are chips (``modality_dropout``: see
    :func:`~eo_fusion.train.finetune.drop_modalities`)."""

    name = "segmentation"

    def __init__(self, data: ChipArrays, modality_dropout: float = 0.0) -> None:
        self.data = data
        self.modality_dropout = modality_dropout

    def __len__(self) -> int:
        return len(self.data.ids)

    def class_counts(self, n_classes: int) -> np.ndarray:
        lab = self.data.label
        return np.bincount(lab[lab >= 0].ravel(), minlength=n_classes).astype(np.float64)

    def batch(self, samples: Sequence[int], step: int, seed: int, offset: int) -> dict[str, Any]:
        xs, ys = [], []
        for j, i in enumerate(samples):
            rng = sample_rng(seed, step, offset + j)
            x, y = augment([self.data.x[i], self.data.label[i][None]], rng)
            xs.append(drop_modalities(x, self.data.groups, self.modality_dropout, rng))
            ys.append(y[0])
        return {"x": torch.from_numpy(np.stack(xs)), "y": torch.from_numpy(np.stack(ys))}

    def loss(self, logits: torch.Tensor, batch: dict[str, Any], weight: torch.Tensor | None):
        y = batch["y"].to(logits.device)
        per = F.cross_entropy(logits.float(), y, weight=weight, ignore_index=-1, reduction="sum")
        valid = y >= 0
        w = weight[y[valid]].sum() if weight is not None else valid.sum().to(per)
        return per, w.to(per)

    def evaluate(self, predict, n_classes: int) -> np.ndarray:  # type: ignore[no-untyped-def]
        cm = np.zeros((n_classes, n_classes), np.int64)
        for i in range(len(self)):
            probs = predict(self.data.x[i : i + 1])[0]
            lab = self.data.label[i]
            cm += confusion(lab, probs.argmax(0), n_classes, ignore=lab < 0)
        return cm


class ParcelTask:
    """One class per field; samples are (chip, field) pairs."""

    name = "parcel"

    def __init__(
        self, data: ChipArrays, field_cls: dict[int, int], modality_dropout: float = 0.0
    ) -> None:
        self.data = data
        self.field_cls = field_cls
        self.modality_dropout = modality_dropout
        self.samples: list[tuple[int, int]] = []
        for i in range(len(data.ids)):
            on = data.label[i] >= 0
            f, n = np.unique(data.field[i][on], return_counts=True)
            self.samples += [
                (i, int(k)) for k, c in zip(f, n, strict=True) if c >= MIN_PARCEL_PIXELS
            ]

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self, n_classes: int) -> np.ndarray:
        cls = [self.field_cls[f] for f in {f for _, f in self.samples}]
        return np.bincount(np.asarray(cls, int), minlength=n_classes).astype(np.float64)

    def _mask(self, i: int, f: int) -> np.ndarray:
        return (self.data.field[i] == f) & (self.data.label[i] >= 0)

    def batch(self, samples: Sequence[int], step: int, seed: int, offset: int) -> dict[str, Any]:
        xs, ms, ys = [], [], []
        for j, s in enumerate(samples):
            i, f = self.samples[s]
            rng = sample_rng(seed, step, offset + j)
            x, m = augment([self.data.x[i], self._mask(i, f)[None]], rng)
            xs.append(drop_modalities(x, self.data.groups, self.modality_dropout, rng))
            ms.append(m[0])
            ys.append(self.field_cls[f])
        return {
            "x": torch.from_numpy(np.stack(xs)),
            "m": torch.from_numpy(np.stack(ms)),
            "y": torch.tensor(ys, dtype=torch.int64),
        }

    @staticmethod
    def pooled(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean logits over each sample's field pixels: ``(B, K)``."""
        m = mask.to(logits.device, torch.float32)[:, None]
        return (logits.float() * m).sum((-2, -1)) / m.sum((-2, -1)).clamp(min=1)

    def loss(self, logits: torch.Tensor, batch: dict[str, Any], weight: torch.Tensor | None):
        y = batch["y"].to(logits.device)
        per = F.cross_entropy(self.pooled(logits, batch["m"]), y, weight=weight, reduction="sum")
        w = weight[y].sum() if weight is not None else torch.tensor(float(len(y)))
        return per, w.to(per)

    def evaluate(self, predict, n_classes: int) -> np.ndarray:  # type: ignore[no-untyped-def]
        acc: dict[int, np.ndarray] = {}
        for i in range(len(self.data.ids)):
            probs = None
            for ci, f in self.samples:
                if ci != i:
                    continue
                if probs is None:
                    probs = predict(self.data.x[i : i + 1])[0]
                m = self._mask(i, f)
                acc[f] = acc.get(f, 0) + probs[:, m].mean(axis=1)
        fields = sorted(acc)
        truth = np.array([self.field_cls[f] for f in fields], int)
        pred = np.array([int(np.argmax(acc[f])) for f in fields], int)
        return confusion(truth, pred, n_classes)


class SceneModel(torch.nn.Module):
    """Multi-label scene classifier: encoder tokens, mean-pooled, then a linear layer.

    ``(B, C, H, W)`` -> logits ``(B, K)`` (independent sigmoid per class).
    """

    def __init__(self, encoder: SpectralViT, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.dim, n_classes)

    def forward(self, x: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
        tok, missing = self.encoder.masked_tokens(x, keys)
        out, _ = self.encoder.run_blocks(tok, (), missing)
        keep = (~missing)[..., None].to(out.dtype)  # mean over the patches that have data
        return self.head((out * keep).sum(1) / keep.sum(1).clamp(min=1))


class MultiLabelTask:
    """Multi-label scene classes; samples are chips with a multi-hot target."""

    name = "multilabel"

    def __init__(self, data: ChipArrays, targets: np.ndarray) -> None:
        self.data = data
        self.targets = targets.astype(np.float32)

    def __len__(self) -> int:
        return len(self.data.ids)

    def class_counts(self, n_classes: int) -> np.ndarray:
        return self.targets.sum(axis=0).astype(np.float64)

    def batch(self, samples: Sequence[int], step: int, seed: int, offset: int) -> dict[str, Any]:
        xs = [
            augment([self.data.x[i]], sample_rng(seed, step, offset + j))[0]
            for j, i in enumerate(samples)
        ]
        return {
            "x": torch.from_numpy(np.stack(xs)),
            "y": torch.from_numpy(self.targets[list(samples)]),
        }

    def loss(self, logits: torch.Tensor, batch: dict[str, Any], weight: torch.Tensor | None):
        # Class weights do not apply to independent binary targets; every (chip, class) counts 1.
        y = batch["y"].to(logits.device)
        per = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum")
        return per, torch.tensor(float(y.numel())).to(per)

    def scores(self, predict) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        probs = np.stack([predict(self.data.x[i : i + 1])[0] for i in range(len(self))])
        return multilabel_scores(self.targets, probs)


def multilabel_scores(
    truth: np.ndarray, probs: np.ndarray, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """mAP (macro over classes with a positive), micro AP, F1 at 0.5 (macro, micro), per class."""
    from sklearn.metrics import average_precision_score, f1_score

    t = (np.asarray(truth) > 0.5).astype(int)
    pred = (np.asarray(probs) >= 0.5).astype(int)
    present = t.sum(axis=0) > 0
    ap = [
        float(average_precision_score(t[:, k], probs[:, k])) if present[k] else None
        for k in range(t.shape[1])
    ]
    f1 = f1_score(t, pred, average=None, zero_division=0)
    names = list(names) if names is not None else [str(k) for k in range(t.shape[1])]
    kept = [a for a in ap if a is not None]
    return {
        "map": float(np.mean(kept)) if kept else None,
        "ap_micro": float(average_precision_score(t.ravel(), probs.ravel())) if t.any() else None,
        "f1_macro": float(np.mean(f1[present])) if present.any() else None,
        "f1_micro": float(f1_score(t, pred, average="micro", zero_division=0)),
        "n_samples": len(t),
        "per_class": {
            n: {
                "ap": ap[k],
                "f1": float(f1[k]) if present[k] else None,
                "n_ref": int(t[:, k].sum()),
            }
            for k, n in enumerate(names)
        },
    }


def make_task(  # type: ignore[no-untyped-def]
    kind: str, data: ChipArrays, field_cls: dict[int, int], modality_dropout: float = 0.0
):
    """The task object for ``segmentation`` or ``parcel``."""
    if kind == "segmentation":
        return SegmentationTask(data, modality_dropout)
    return ParcelTask(data, field_cls, modality_dropout)


def task_scores(cm: np.ndarray, class_ids: Sequence[int]) -> dict[str, Any]:
    """OA, mIoU, macro F1 and per-class IoU/F1 (the fine-tuning report's metrics) + confusion."""
    out = scores(cm, class_ids)
    out["confusion"] = np.asarray(cm).tolist()
    return out
