"""What every modality loader shares: grouped reads through a :class:`Reader`, same-day mosaics,
band order and temporal aggregation.

``ModalityResult``, ``nanmean`` and ``nanmedian`` live in :mod:`eo_fusion.sources.result` (so that
``coreg/`` need not import the readers) and are re-exported here for the loaders.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

from eo_fusion.bands import REGISTRY
from eo_fusion.catalogs.items import BandAsset, NormalizedItem
from eo_fusion.sources.reader import Reader, ReadSpec
from eo_fusion.sources.result import ModalityResult, nanmean, nanmedian

__all__ = [
    "MAX_PASS_GAP_S",
    "DayMosaic",
    "ModalityResult",
    "acquisition_key",
    "aggregate_periods",
    "band_order",
    "group_same_day",
    "nanmean",
    "nanmedian",
    "read_day_mosaics",
    "read_item_bands",
    "stack_taking",
]


_ORDER = {k: i for i, k in enumerate(REGISTRY)}


def band_order(keys: Iterable[str]) -> list[str]:
    """Keys in registry order (B01 … B8A … B12, VV before VH, …), unknown keys last by name."""
    return sorted(set(keys), key=lambda k: (_ORDER.get(k, len(_ORDER)), k))


def read_item_bands(
    item: NormalizedItem,
    keys: Sequence[str],
    gbox: GeoBox,
    spec_for: Callable[[BandAsset], ReadSpec],
    reader: Reader,
) -> np.ndarray:
    """Read ``keys`` of ``item`` onto ``gbox`` through ``reader`` → ``(band, y, x)``; absent keys
    stay NaN.

    Bands stored in one file are read in one call (one windowed read of a multi-band GeoTIFF).
    A reader with a ``prefetch(assets)`` method is told about all the item's files first.
    """
    out = np.empty((len(keys), *gbox.shape.yx), dtype=np.float32)
    groups: dict[tuple[str, ReadSpec], list[tuple[int, BandAsset]]] = defaultdict(list)
    missing = []
    for i, k in enumerate(keys):
        asset = item.bands.get(k)
        if asset is not None:
            groups[(asset.href, spec_for(asset))].append((i, asset))
        else:
            missing.append(i)
    out[missing] = np.nan
    prefetch = getattr(reader, "prefetch", None)  # optional: readers that can start early
    if prefetch is not None and len(groups) > 1:
        prefetch([members[0][1] for members in groups.values()])
    for (_, spec), members in sorted(groups.items(), key=lambda kv: kv[0][0]):
        idx = [i for i, _ in members]
        if idx == list(range(idx[0], idx[0] + len(idx))):  # contiguous: read in place
            reader.read([a for _, a in members], gbox, spec, out=out[idx[0] : idx[-1] + 1])
        else:
            out[idx] = reader.read([a for _, a in members], gbox, spec)
    return out


#: Scenes of one day more than this far apart in time are different passes (one pass over a
#: region takes a few minutes; adjacent granules of a pass are seconds apart).
MAX_PASS_GAP_S = 15 * 60.0


def acquisition_key(item: NormalizedItem) -> tuple[str, str, str]:
    """What makes two scenes of one day one acquisition: platform, relative orbit and orbit
    direction (STAC ``platform``, ``sat:relative_orbit``, ``sat:orbit_state``; empty if absent).
    """
    p = item.properties
    return (
        str(p.get("platform", "")).lower(),
        str(p.get("sat:relative_orbit", "")),
        str(p.get("sat:orbit_state", "")).lower(),
    )


def group_same_day(items: Sequence[NormalizedItem]) -> list[list[NormalizedItem]]:
    """Items grouped into acquisitions: same UTC day, same :func:`acquisition_key` and no gap
    over :data:`MAX_PASS_GAP_S` between consecutive scenes (adjacent granules of one pass are
    mosaicked; another orbit, platform or pass of the same day stays a separate acquisition,
    never merged into the first, which would drop it wherever both cover a pixel). Groups in
    time order, items in a group ordered by id (deterministic mosaics)."""
    by_key: dict[tuple[str, tuple[str, str, str]], list[NormalizedItem]] = defaultdict(list)
    for it in items:
        by_key[(it.datetime.strftime("%Y-%m-%d"), acquisition_key(it))].append(it)
    groups: list[list[NormalizedItem]] = []
    for members in by_key.values():
        members = sorted(members, key=lambda i: (i.datetime, i.id))
        current = [members[0]]
        for it in members[1:]:
            if (it.datetime - current[-1].datetime).total_seconds() > MAX_PASS_GAP_S:
                groups.append(current)
                current = []
            current.append(it)
        groups.append(current)
    groups.sort(key=lambda g: (min(i.datetime for i in g), min(i.id for i in g)))
    return [sorted(g, key=lambda i: i.id) for g in groups]


@dataclass(frozen=True)
class DayMosaic:
    """All items of one acquisition day read onto one grid: ``data`` is ``(band, y, x)``."""

    data: np.ndarray
    time: datetime
    items: list[NormalizedItem]


def read_day_mosaics(
    items: Sequence[NormalizedItem],
    keys: Sequence[str],
    gbox: GeoBox,
    spec_for: Callable[[BandAsset], ReadSpec],
    reader: Reader,
) -> list[DayMosaic]:
    """One mosaic per acquisition (see :func:`group_same_day`), in time order.

    Within a day the first valid value wins, items taken in id order (deterministic).
    """
    out = []
    for group in group_same_day(items):
        data = np.full((len(keys), *gbox.shape.yx), np.nan, dtype=np.float32)
        for it in group:
            fill_missing(data, read_item_bands(it, keys, gbox, spec_for, reader))
        out.append(DayMosaic(data, min(i.datetime for i in group), group))
    return out


def stack_taking(parts: list[Any], keep: Sequence[int], shape: tuple[int, ...]) -> np.ndarray:
    """``np.stack([parts[i] for i in keep])`` that drops each part from ``parts`` once copied:
    the peak memory is the result plus one part, not twice the result. ``shape``: the shape of
    one part (the result is ``(len(keep), *shape)``, also when ``keep`` is empty)."""
    dtype = next((p.dtype for p in parts if p is not None), np.dtype(np.float32))
    out = np.empty((len(keep), *shape), dtype=dtype)
    for j, i in enumerate(keep):
        part = parts[i]
        assert part is not None, f"part {i} taken twice"
        out[j] = part
        parts[i] = None
    return out


def fill_missing(dst: np.ndarray, src: np.ndarray) -> None:
    """Paste ``src`` into ``dst`` where ``dst`` is NaN (first valid value wins)."""
    np.copyto(dst, src, where=np.isnan(dst) & ~np.isnan(src))


def period_start(t: datetime, period: str) -> datetime:
    """Start of the ``monthly`` or ``semimonthly`` (1st-15th, 16th-end) period containing ``t``."""
    if period == "monthly":
        return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if period == "semimonthly":
        return t.replace(day=1 if t.day <= 15 else 16, hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"unknown aggregation period {period!r}")


def aggregate_periods(
    data: np.ndarray,
    times: list[datetime],
    period: str,
    reduce: Callable[[np.ndarray, int], np.ndarray],
) -> tuple[np.ndarray, list[datetime]]:
    """Reduce a ``(time, band, y, x)`` series per period with ``reduce(array, axis=0)``."""
    keys = [period_start(t, period) for t in times]
    starts = sorted(set(keys))
    out = np.stack(
        [reduce(data[[i for i, k in enumerate(keys) if k == s]], 0) for s in starts]
    ).astype(np.float32)
    return out, starts
