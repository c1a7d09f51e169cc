"""PyTorch datasets over a chip store, for eo-fusion's own loop, Lightning and TorchGeo users.

* :class:`ChipDataset` — one sample per built chip of a split: per modality the input array
  (``(C, H, W)`` composite or ``(T, C, H, W)`` time series, float32 physical units, NaN = no
  data), its validity mask, band keys and dates, plus the label raster (class index, -1 = no
  label) and the field raster; scene chips (multi-label jobs) add ``labels``, a multi-hot
  vector over the classes. Time series are aligned on the union of the store's dates (a
  date a chip lacks is NaN), so samples of one store batch together. Optional standardisation
  with per-band ``(mean, std)``.
* :class:`TorchGeoChipDataset` — TorchGeo's sample convention: ``image`` ``(C, H, W)`` float
  (standardised, no data = 0; a time series is flattened date-major to ``T*C`` channels) and
  ``mask`` ``(H, W)`` long with ``0`` = unlabelled and classes ``1..K``, so TorchGeo trainers take
  ``num_classes=K+1, ignore_index=0``.
* :class:`ChipDataModule` — a ``LightningDataModule`` with the train/val/test loaders of either.

Dates are given as days since 1970-01-01 (``dates``) and day of year (``doy``), UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from eo_fusion.errors import BadInputError
from eo_fusion.stack import modality_array, plain_dims
from eo_fusion.train.chips import ChipManifest, open_chip

__all__ = ["ChipDataModule", "ChipDataset", "TorchGeoChipDataset", "chip_stats", "collate_chips"]

Stats = Mapping[str, Mapping[str, Sequence[float]]]


def _manifest(run_dir: Path) -> ChipManifest:
    manifest = ChipManifest.load(run_dir)
    if manifest is None:
        raise BadInputError(
            f"{run_dir} is not a chip store (no chips.json)", fix="run `eo-fusion train` first"
        )
    return manifest


class ChipDataset(Dataset[dict[str, Any]]):
    """Samples of one split of a chip store (see the module docstring).

    Args:
        run_dir: the training run folder holding ``chips.zarr`` and ``chips.json``.
        split: ``train``, ``val``, ``test`` or ``None`` for every built chip.
        inputs: modality -> band keys to keep (default: every modality and band of the chips).
        stats: per modality and band key ``(mean, std)`` to standardise with (default: none).
        cache: keep loaded chips in memory (the store is read once per chip).
    """

    def __init__(
        self,
        run_dir: Path,
        split: str | None = "train",
        *,
        inputs: Mapping[str, Sequence[str]] | None = None,
        stats: Stats | None = None,
        cache: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.manifest = _manifest(self.run_dir)
        self.ids = self.manifest.usable(split)
        self.split = split
        self.stats = stats
        self.classes = self.manifest.classes
        self._cache: dict[str, dict[str, Any]] | None = {} if cache else None
        self.dates = self._union_dates()
        self.inputs = {k: list(v) for k, v in (inputs or self._all_inputs()).items()}

    def _union_dates(self) -> dict[str, np.ndarray]:
        out: dict[str, set[str]] = {}
        for rec in self.manifest.chips.values():
            if rec.state == "done":
                for mod, ds in rec.dates.items():
                    out.setdefault(mod, set()).update(ds)
        return {m: np.array(sorted(v), dtype="datetime64[ns]") for m, v in out.items()}

    def _all_inputs(self) -> dict[str, list[str]]:
        if not self.ids:
            return {}
        ds = open_chip(self.run_dir, self.ids[0])
        mods = [str(v) for v in ds.data_vars if "modality" in ds[v].attrs]
        return {m: [str(b) for b in ds[f"{m}:band"].values] for m in sorted(mods)}

    def __len__(self) -> int:
        return len(self.ids)

    def _modality(self, ds: Any, mod: str) -> tuple[np.ndarray, np.ndarray]:
        arr = modality_array(ds, mod)
        have = [str(b) for b in arr["band"].values]
        missing = [k for k in self.inputs[mod] if k not in have]
        if missing:
            raise BadInputError(
                f"chip {ds.attrs.get('chip_id')}: modality {mod} lacks bands {missing}",
                fix=f"choose inputs among {have}",
            )
        arr = arr.sel(band=self.inputs[mod])
        if f"{mod}:valid" in ds.data_vars:  # cloud / no-data masks reach the model as NaN
            arr = arr.where(plain_dims(ds[f"{mod}:valid"], mod).astype(bool))
        if "time" in arr.dims:
            arr = arr.reindex(time=self.dates[mod])
        vals = np.asarray(arr.transpose(..., "band", "y", "x").values, dtype=np.float32)
        if self.stats is not None:
            mean = np.array([self.stats[mod][k][0] for k in self.inputs[mod]], np.float32)
            std = np.array([self.stats[mod][k][1] for k in self.inputs[mod]], np.float32)
            vals = (vals - mean[:, None, None]) / std[:, None, None]
        return vals, np.asarray(np.isfinite(vals).any(axis=-3))

    def _load(self, chip_id: str) -> dict[str, Any]:
        if self._cache is not None and chip_id in self._cache:
            return self._cache[chip_id]
        ds = open_chip(self.run_dir, chip_id)
        rec = self.manifest.chips[chip_id]
        sample: dict[str, Any] = {
            "id": chip_id,
            "split": rec.split,
            "inputs": {},
            "valid": {},
            "keys": dict(self.inputs),
            "dates": {},
            "doy": {},
        }
        for mod in self.inputs:
            vals, valid = self._modality(ds, mod)
            sample["inputs"][mod] = torch.from_numpy(vals)
            sample["valid"][mod] = torch.from_numpy(valid)
            if mod in self.dates:
                t = pd.DatetimeIndex(self.dates[mod])
                days = t.values.astype("datetime64[D]").astype(np.int64)
                sample["dates"][mod] = torch.from_numpy(days)
                sample["doy"][mod] = torch.tensor(t.day_of_year.values, dtype=torch.float32)
        sample["mask"] = torch.from_numpy(np.asarray(ds["label"].values, dtype=np.int64))
        sample["field"] = torch.from_numpy(np.asarray(ds["field"].values, dtype=np.int64))
        if rec.labels is not None:  # scene chips: multi-hot classes
            hot = torch.zeros(len(self.classes), dtype=torch.float32)
            hot[list(rec.labels)] = 1.0
            sample["labels"] = hot
        if self._cache is not None:
            self._cache[chip_id] = sample
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._load(self.ids[index])


def collate_chips(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch :class:`ChipDataset` samples: tensors stacked, keys/ids as lists."""
    first = samples[0]
    out: dict[str, Any] = {
        "id": [s["id"] for s in samples],
        "split": [s["split"] for s in samples],
        "keys": first["keys"],
    }
    for group in ("inputs", "valid", "dates", "doy"):
        out[group] = {m: torch.stack([s[group][m] for s in samples]) for m in first[group]}
    out["mask"] = torch.stack([s["mask"] for s in samples])
    out["field"] = torch.stack([s["field"] for s in samples])
    if "labels" in first:
        out["labels"] = torch.stack([s["labels"] for s in samples])
    return out


def chip_stats(dataset: ChipDataset) -> dict[str, dict[str, list[float]]]:
    """Mean and std per modality and band over a (non-standardised) dataset's valid pixels."""
    acc: dict[str, dict[str, list[np.ndarray]]] = {}
    for i in range(len(dataset)):
        s = dataset[i]
        for mod, keys in s["keys"].items():
            arr = s["inputs"][mod].numpy()
            for j, k in enumerate(keys):
                v = arr[..., j, :, :].ravel()
                acc.setdefault(mod, {}).setdefault(k, []).append(v[np.isfinite(v)])
    out: dict[str, dict[str, list[float]]] = {}
    for mod, per in acc.items():
        for k, parts in per.items():
            v = np.concatenate(parts)
            mean = float(v.mean()) if v.size else 0.0
            out.setdefault(mod, {})[k] = [mean, float(max(v.std(), 1e-3)) if v.size else 1.0]
    return out


def _torchgeo_base() -> type:
    try:  # TorchGeo is optional: the adapter is a NonGeoDataset when it is installed
        from torchgeo.datasets import NonGeoDataset

        return NonGeoDataset
    except ImportError:  # pragma: no cover - TorchGeo not installed
        return Dataset


class TorchGeoChipDataset(_torchgeo_base()):  # type: ignore[misc]
    """TorchGeo-style samples ``{"image", "mask"}`` over a chip store (module docstring).

    Subclasses ``torchgeo.datasets.NonGeoDataset`` when TorchGeo is installed (it is optional),
    so TorchGeo's trainers, samplers and transforms accept it.
    """

    def __init__(self, chips: ChipDataset) -> None:
        self.chips = chips
        self.num_classes = len(chips.classes) + 1  # 0 = unlabelled
        self.ignore_index = 0
        self.in_channels = self._channels()

    def _channels(self) -> int:
        if not len(self.chips):
            return 0
        s = self.chips[0]
        return int(sum(int(np.prod(v.shape[:-2])) for v in s["inputs"].values()))

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.chips[index]
        parts = [v.reshape(-1, *v.shape[-2:]) for v in s["inputs"].values()]
        image = torch.nan_to_num(torch.cat(parts, dim=0), nan=0.0)
        return {"image": image, "mask": s["mask"] + 1}


def _lightning_base() -> type:
    try:
        from lightning.pytorch import LightningDataModule

        return LightningDataModule
    except ImportError:  # pragma: no cover - Lightning not installed
        return object


class ChipDataModule(_lightning_base()):  # type: ignore[misc]
    """Train/val/test loaders over a chip store (standardised with the train split's stats).

    Args:
        run_dir: training run folder.
        batch_size: samples per batch.
        torchgeo: yield TorchGeo samples (``image``/``mask``) instead of eo-fusion's.
        inputs: modality -> band keys (default: all).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        run_dir: Path,
        batch_size: int = 8,
        *,
        torchgeo: bool = False,
        inputs: Mapping[str, Sequence[str]] | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.batch_size = batch_size
        self.torchgeo = torchgeo
        self.inputs = inputs
        self.num_workers = num_workers
        self.stats: dict[str, dict[str, list[float]]] | None = None

    def setup(self, stage: str | None = None) -> None:
        """Compute the train split's statistics once."""
        if self.stats is None:
            self.stats = chip_stats(ChipDataset(self.run_dir, "train", inputs=self.inputs))

    def dataset(self, split: str) -> Dataset[dict[str, Any]]:
        """The (standardised) dataset of one split."""
        self.setup()
        chips = ChipDataset(self.run_dir, split, inputs=self.inputs, stats=self.stats)
        return TorchGeoChipDataset(chips) if self.torchgeo else chips

    def _loader(self, split: str, shuffle: bool) -> DataLoader[dict[str, Any]]:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=None if self.torchgeo else collate_chips,
        )

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("test", False)
