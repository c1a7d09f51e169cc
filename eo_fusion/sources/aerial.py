"""Aerial RGB / RGBN imagery (GeoTIFF, or JPEG/PNG with a world file and a CRS from the asset).

Values become 0-1 brightness with the spec's scale (1/255 for 8-bit). On a coarser grid the
pixels are area-averaged (GDAL ``average``, from JPEG/overview levels where available); with
``ModalitySpec.resolution`` set finer than the tile grid (e.g. 0.5 m in a 10 m grid) the imagery
stays on that sub-grid, which shares the tile's anchor so each coarse pixel covers an exact block.

Several items: ``composite`` mosaics them with the most recent acquisition on top; ``timeseries``
keeps each date.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

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

__all__ = ["load_aerial"]


def load_aerial(
    items: list[NormalizedItem], gbox: GeoBox, mspec: ModalitySpec, reader: Reader
) -> ModalityResult:
    """Read aerial items onto ``gbox`` (the tile grid or the modality's sub-grid)."""
    keys = list(mspec.bands) if mspec.bands else band_order(k for i in items for k in i.bands)
    bad = [k for k in keys if not k.startswith("aerial:")]
    if bad:
        raise BandError(f"aerial modality asked for bands {bad}", fix="use aerial:red|green|…")

    def spec_for(asset):
        return ReadSpec(kind="aerial")

    days = read_day_mosaics(items, keys, gbox, spec_for, reader)
    slices = [d.data for d in days]
    times = [d.time for d in days]
    ids = [i.id for d in days for i in d.items]
    attrs: dict[str, Any] = {"dates": [t.isoformat() for t in times], "mode": mspec.mode}
    units = ["brightness"] * len(keys)
    if mspec.mode == "composite":
        data = slices[-1].copy()
        for s in reversed(slices[:-1]):
            fill_missing(data, s)
        attrs["composite"] = "mosaic, most recent on top"
        valid = np.all(np.isfinite(data), axis=0)
        return ModalityResult(data, valid, keys, units, gbox, None, ids, attrs)
    data = np.stack(slices)
    return ModalityResult(
        data, np.all(np.isfinite(data), axis=1), keys, units, gbox, times, ids, attrs
    )
