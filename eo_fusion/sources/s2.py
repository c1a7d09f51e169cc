"""Sentinel-2 L1C / L2A: reflectance on the tile grid, cloud and shadow masks, composites.

* Values: ``stored * scale + offset`` from each item's :class:`BandSpec` (the catalog layer puts
  the processing-baseline 04.00 offset of -0.1 into ``offset``), giving reflectance (L2A surface,
  L1C top of atmosphere), NaN where the stored value is nodata.
* Masks: L2A uses the scene classification (``s2:SCL``): no data, saturated, cloud shadow, cloud
  medium/high probability and thin cirrus are masked. L1C uses the ``s2cloudless`` LightGBM model
  (shipped in its wheel) on the ten bands it needs, run at 160 m as its authors do
  (:mod:`eo_fusion.sources.s2cloud`), plus a documented shadow heuristic (dark NIR and SWIR
  pixels within ``shadow_search_px`` of a cloud). When neither is possible (an L2A item without
  SCL, an L1C item missing a model band) only nodata is masked and ``cloud_mask`` says so.
* ``s2:CLP`` (L1C): the s2cloudless cloud probability (0-1) as a band a stack can ask for. It is
  not masked by the cloud mask (it is the layer that explains it), so a composite holds its
  median over every observation, cloudy ones included (docs/stacks.md).
* Modes: ``composite`` = per-pixel median of clear observations; ``timeseries`` keeps each date
  (cloudy pixels NaN, ``valid`` False), optionally reduced to ``monthly``/``semimonthly`` medians.

Options: :class:`eo_fusion.modalities.S2Options` (s2cloudless threshold, averaging and dilation,
the shadow heuristic, ``mask_snow`` for SCL class 11, ``min_valid_fraction``); defaults live there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import ModalitySpec
from eo_fusion.errors import BandError
from eo_fusion.modalities import S2Options
from eo_fusion.sources.common import (
    ModalityResult,
    aggregate_periods,
    band_order,
    fill_missing,
    group_same_day,
    nanmedian,
    read_item_bands,
    stack_taking,
)
from eo_fusion.sources.reader import Reader, ReadSpec
from eo_fusion.sources.s2cloud import CLP_KEY, S2CLOUDLESS_BANDS, CloudLayer, s2cloudless_layer

__all__ = ["CLP_KEY", "S2CLOUDLESS_BANDS", "SCL_MASKED", "load_s2"]

#: SCL classes treated as not clear: 0 no data, 1 saturated/defective, 3 cloud shadow,
#: 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus (ESA L2A product spec).
SCL_MASKED = (0, 1, 3, 8, 9, 10)
SCL_SNOW = 11


def _clear_from_scl(scl: np.ndarray, mask_snow: bool) -> np.ndarray:
    masked = list(SCL_MASKED) + ([SCL_SNOW] if mask_snow else [])
    return np.isfinite(scl) & ~np.isin(scl, masked)


def _clear_from_clouds(
    layer: CloudLayer, nir: np.ndarray, swir: np.ndarray, opts: S2Options
) -> np.ndarray:
    """True = neither cloud nor cloud shadow. Shadow heuristic: shadows are dark in NIR and
    SWIR and lie near a cloud (within the distance a cloud's shadow is cast at Sentinel-2 sun
    angles for low/mid clouds: a few hundred metres)."""
    dark = (nir < opts.shadow_nir_max) & (swir < opts.shadow_swir_max)
    shadow = layer.near_cloud & dark & ~layer.cloud
    return ~layer.cloud & ~shadow


def _requested_bands(items: list[NormalizedItem], mspec: ModalitySpec) -> list[str]:
    if mspec.bands:
        unknown = [b for b in mspec.bands if not b.startswith("s2:")]
        if unknown:
            raise BandError(
                f"Sentinel-2 modality asked for non-S2 bands {unknown}", fix="use s2:B01 … s2:B12"
            )
        return list(mspec.bands)
    keys = {k for it in items for k in it.bands if k != "s2:SCL"}
    return band_order(keys)


def _spec_for(asset) -> ReadSpec:
    return ReadSpec(kind=asset.spec.kind)


def _observation(
    group: list[NormalizedItem], keys: list[str], gbox: GeoBox, opts: S2Options, reader
) -> tuple[np.ndarray, np.ndarray, str]:
    """Mosaic one day's items → (bands, clear mask, cloud-mask method)."""
    clp = keys.index(CLP_KEY) if CLP_KEY in keys else None
    data: np.ndarray | None = None
    clear = np.zeros(gbox.shape.yx, dtype=bool)
    methods: set[str] = set()
    for it in group:
        arr = read_item_bands(it, keys, gbox, _spec_for, reader)
        method, ok, layer = _item_clear(it, keys, arr, gbox, opts, reader)
        methods.add(method)
        arr[:, ~ok] = np.nan
        if clp is not None:
            if layer is None:
                raise BandError(
                    f"item {it.id} cannot give {CLP_KEY}: s2cloudless needs an L1C item with "
                    f"all of {list(S2CLOUDLESS_BANDS)}",
                    fix=f"drop {CLP_KEY} from the bands or search a collection that has them",
                )
            arr[clp] = layer.probability  # the probability layer is not masked by itself
        if data is None:
            data = arr  # first item of the day: no copy
        else:
            fill_missing(data, arr)
        clear |= ok
    assert data is not None  # a day group always holds at least one item
    clear &= _finite(data, keys)
    return data, clear, "+".join(sorted(methods))


def _finite(arr: np.ndarray, keys: list[str]) -> np.ndarray:
    """All read bands finite (the computed ``s2:CLP`` row is left out)."""
    ok = np.ones(arr.shape[1:], bool)
    for i, k in enumerate(keys):  # band by band: no copy of the bands, no (band, y, x) temporary
        if k != CLP_KEY:
            ok &= np.isfinite(arr[i])
    return ok


def _item_clear(
    it: NormalizedItem, keys: list[str], arr: np.ndarray, gbox: GeoBox, opts: S2Options, reader
) -> tuple[str, np.ndarray, CloudLayer | None]:
    """(cloud-mask method, clear mask, s2cloudless layer or None) of one item on ``gbox``."""
    finite = _finite(arr, keys)
    level = it.modality
    if level != "s2-l1c" and "s2:SCL" in it.bands:
        scl = read_item_bands(it, ["s2:SCL"], gbox, _spec_for, reader)[0]
        return "scl", finite & _clear_from_scl(scl, opts.mask_snow), None
    if level == "s2-l1c" and all(b in it.bands for b in S2CLOUDLESS_BANDS):
        layer = s2cloudless_layer(
            lambda grid: read_item_bands(it, S2CLOUDLESS_BANDS, grid, _spec_for, reader),
            gbox,
            opts,
        )
        idx = {k: i for i, k in enumerate(keys)}
        missing = [b for b in ("s2:B08", "s2:B11") if b not in idx]
        extra = read_item_bands(it, missing, gbox, _spec_for, reader) if missing else None

        def band(k):
            return arr[idx[k]] if k in idx else extra[missing.index(k)]

        clear = _clear_from_clouds(layer, band("s2:B08"), band("s2:B11"), opts)
        return "s2cloudless", finite & clear, layer
    return "none", finite, None


def load_s2(
    items: list[NormalizedItem], gbox: GeoBox, mspec: ModalitySpec, reader: Reader
) -> ModalityResult:
    """Read Sentinel-2 items onto ``gbox`` as a composite or time series (see module doc)."""
    keys = _requested_bands(items, mspec)
    opts = S2Options.of(mspec.options)
    data_t: list[np.ndarray] = []
    clear_t: list[np.ndarray] = []
    times: list[datetime] = []
    ids: list[str] = []
    methods: list[str] = []
    for group in group_same_day(items):
        data, clear, method = _observation(group, keys, gbox, opts, reader)
        data_t.append(data)
        clear_t.append(clear)
        times.append(min(i.datetime for i in group))
        ids.extend(i.id for i in group)
        methods.append(method)
    if not data_t:
        raise BandError("no Sentinel-2 items to stack", fix="widen the search or drop the modality")
    frac = [float(c.mean()) for c in clear_t]
    keep = [i for i, f in enumerate(frac) if f >= opts.min_valid_fraction]
    times = [times[i] for i in keep]
    attrs: dict[str, Any] = {
        "dates": [t.isoformat() for t in times],
        "valid_fraction": [frac[i] for i in keep],
        "cloud_mask": [methods[i] for i in keep],
        "mode": mspec.mode,
    }
    units = ["reflectance"] * len(keys)
    if mspec.mode == "composite":
        if len(keep) == 1:
            comp = data_t[keep[0]]  # the median of one observation is that observation
        elif keep:
            comp = nanmedian(np.stack([data_t[i] for i in keep]), axis=0)
        else:
            comp = np.full((len(keys), *gbox.shape.yx), np.nan, dtype=np.float32)
        valid = np.all(np.isfinite(comp), axis=0)
        attrs["composite"] = "median of clear observations"
        return ModalityResult(
            comp.astype(np.float32, copy=False), valid, keys, units, gbox, None, ids, attrs
        )
    shape = (0, len(keys), *gbox.shape.yx)
    data = stack_taking(data_t, keep, shape[1:])
    clear = np.stack([clear_t[i] for i in keep]) if keep else np.empty((0, *gbox.shape.yx), bool)
    return _timeseries(data, clear, times, keys, units, gbox, ids, attrs, mspec.aggregate)


def _timeseries(data, clear, times: list[datetime], keys, units, gbox, ids, attrs, aggregate):
    if aggregate != "none" and len(times):
        data, times = aggregate_periods(data, times, aggregate, nanmedian)
        attrs["aggregate"] = f"{aggregate} median of clear observations"
    valid = np.all(np.isfinite(data), axis=1)
    return ModalityResult(
        data.astype(np.float32, copy=False), valid, keys, units, gbox, times, ids, attrs
    )
