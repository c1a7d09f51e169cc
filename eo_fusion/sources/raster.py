"""Generic single-layer rasters: labels (categorical), indices such as NDVI, any registry band.

Each band is resampled by the rule of its kind (categorical: nearest, or mode when ≥ 2x coarser).
Several items: ``composite`` mode mosaics them (first item by date, then id, wins where it has
data); ``timeseries`` keeps one slice per date. Multi-band items whose bands are *dates* (e.g. the
Slovenia ``NDVI_68dates.tif``) are normalised by the catalog into one item per date.
"""

from __future__ import annotations

import numpy as np
from odc.geo.geobox import GeoBox

from eo_fusion.bands import BandSpec
from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import ModalitySpec
from eo_fusion.errors import BandError
from eo_fusion.sources.common import (
    ModalityResult,
    band_order,
    fill_missing,
    read_day_mosaics,
)
from eo_fusion.sources.reader import Reader, ReadSpec

__all__ = ["load_raster"]


def load_raster(
    items: list[NormalizedItem], gbox: GeoBox, mspec: ModalitySpec, reader: Reader
) -> ModalityResult:
    """Read generic raster items onto ``gbox`` (see module doc)."""
    keys = list(mspec.bands) if mspec.bands else band_order(k for i in items for k in i.bands)
    if not keys:
        raise BandError("raster modality has no bands to read", fix="list bands in the job")
    specs: dict[str, BandSpec] = {}
    for it in items:
        for k, a in it.bands.items():
            specs.setdefault(k, a.spec)

    def spec_for(asset):
        return ReadSpec(kind=asset.spec.kind)

    days = read_day_mosaics(items, keys, gbox, spec_for, reader)
    slices = [d.data for d in days]
    times = [d.time for d in days]
    ids = [i.id for d in days for i in d.items]
    units = [specs[k].units if k in specs else "" for k in keys]
    kinds = [specs[k].kind if k in specs else "" for k in keys]
    attrs = {"dates": [t.isoformat() for t in times], "kinds": kinds, "mode": mspec.mode}
    if mspec.mode == "composite":
        data = slices[0].copy()
        for s in slices[1:]:
            fill_missing(data, s)
        valid = np.all(np.isfinite(data), axis=0)
        return ModalityResult(data, valid, keys, units, gbox, None, ids, attrs)
    data = np.stack(slices)
    valid = np.all(np.isfinite(data), axis=1)
    return ModalityResult(data, valid, keys, units, gbox, times, ids, attrs)
