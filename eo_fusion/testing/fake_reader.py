"""Test doubles for the reader seam: :class:`FakeReader`, whose pixels encode their own source
coordinates, and :func:`write_test_raster`, the one GeoTIFF writer tests use.

The fake's "files" are source grids held in memory. The stored value of pixel ``(row, col)`` of
band ``b`` is (:func:`fake_pixels`), with ``k = (b - 1) // 3`` and ``B = 1000 * k``::

    b = 1, 4, 7, ...:  B + col + 0.5                 x of the pixel centre, in source pixels
    b = 2, 5, 8, ...:  B + row + 0.5                 y of the pixel centre
    b = 3, 6, 9, ...:  B + (7 * col + 13 * row) % 17 a texture (whole numbers 0-16)

so a value read onto any target grid says which source position it came from (odc-geo's
``gen_test_image_xy`` and odc-loader's ``FakeReaderDriver`` use the same idea): bilinear
resampling of the x/y ramps returns the source pixel coordinates of each target pixel centre,
nearest returns the centre of the source pixel that was picked. The ramps are linear, so
averaging and interpolating agree on them; the texture is not, so it tells resampling rules
(bilinear, average, nearest, mode) apart.

Reading otherwise follows the :class:`~eo_fusion.sources.reader.Reader` contract with the same
shared steps as the rasterio reader (source window, scale/offset/nodata, resampling rule, paste /
numpy fast path / GDAL warp in memory), without files and without overviews.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox

from eo_fusion.bands import get_band
from eo_fusion.catalogs.items import BandAsset, NormalizedItem
from eo_fusion.errors import ReadError
from eo_fusion.sources.reader import ReadSpec, finish_read, new_output, rule_for, to_physical
from eo_fusion.sources.resample import db_to_linear, place, roi_is_empty, source_roi

__all__ = ["FakeReader", "fake_pixels", "write_test_raster"]

#: Offset between consecutive (x, y, texture) band triples of a fake file.
BAND_TRIPLE_OFFSET = 1000.0


def fake_pixels(gbox: GeoBox, band_index: int, roi: tuple[Any, Any] | None = None) -> np.ndarray:
    """Stored float32 values of band ``band_index`` (1-based) of a fake file on ``gbox``, or of
    its window ``roi`` (see the module doc)."""
    sy, sx = roi if roi is not None else (slice(0, gbox.shape.y), slice(0, gbox.shape.x))
    rows = np.arange(sy.start, sy.stop, dtype=np.int64)[:, None]
    cols = np.arange(sx.start, sx.stop, dtype=np.int64)[None, :]
    base = BAND_TRIPLE_OFFSET * ((band_index - 1) // 3)
    which = (band_index - 1) % 3
    if which == 0:
        value = np.broadcast_to(cols + 0.5, (rows.size, cols.size))
    elif which == 1:
        value = np.broadcast_to(rows + 0.5, (rows.size, cols.size))
    else:
        value = (7 * cols + 13 * rows) % 17
    return (value + base).astype(np.float32)


class FakeReader:
    """A :class:`~eo_fusion.sources.reader.Reader` over in-memory source grids (no files).

    Args:
        sources: href -> the source grid of that fake file (more with :meth:`add` / :meth:`item`).

    ``reads`` counts :meth:`read` calls (thread-safe; a pickled copy counts on its own).
    """

    def __init__(self, sources: Mapping[str, GeoBox] | None = None) -> None:
        self.sources: dict[str, GeoBox] = dict(sources or {})
        self._lock = threading.Lock()
        self._reads = 0

    @property
    def reads(self) -> int:
        """How many times :meth:`read` was called."""
        return self._reads

    def add(self, href: str, gbox: GeoBox) -> str:
        """Register a fake file ``href`` on ``gbox``; returns ``href``."""
        self.sources[href] = gbox
        return href

    def item(
        self,
        item_id: str,
        modality: str,
        keys: Sequence[str],
        when: datetime,
        gbox: GeoBox,
        band_indexes: Sequence[int] | None = None,
        **encoding: Any,
    ) -> NormalizedItem:
        """A NormalizedItem whose bands ``keys`` are bands of one fake file on ``gbox``.

        Args:
            band_indexes: the file band of each key (default 1, 2, ...; 3 is a texture).
            encoding: ``scale``, ``offset``, ``nodata`` of every band's spec.
        """
        href = self.add(f"fake://{item_id}", gbox)
        indexes = list(band_indexes) if band_indexes is not None else range(1, len(keys) + 1)
        bands = {
            k: BandAsset(k, k, href, i, get_band(k).with_encoding(**encoding))
            for k, i in zip(keys, indexes, strict=True)
        }
        lon0, lat0, lon1, lat1 = gbox.extent.to_crs("EPSG:4326").boundingbox
        geometry = gbox.extent.to_crs("EPSG:4326").json
        return NormalizedItem(
            item_id, "fake", modality, when, (lon0, lat0, lon1, lat1), geometry, bands
        )

    def read(
        self,
        assets: Sequence[BandAsset],
        gbox: GeoBox,
        spec: ReadSpec,
        *,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Bands of one fake file onto ``gbox`` (the Reader contract; no overviews)."""
        with self._lock:
            self._reads += 1
        out = new_output(assets, gbox, out)
        if not assets:
            return out
        src = self.sources.get(assets[0].href)
        if src is None:
            raise ReadError(
                f"fake file {assets[0].href} (asset {assets[0].asset_key!r}) is not registered",
                fix="register it with FakeReader.add(href, gbox) or FakeReader.item(...)",
            )
        rr = source_roi(src, gbox)
        if roi_is_empty(rr):
            return out
        raw = np.stack([fake_pixels(src, a.band_index, rr.roi_src) for a in assets])
        phys = to_physical(raw, assets, None)
        if spec.sar_db_input:
            phys = db_to_linear(phys)
        place(phys, src[rr.roi_src], out, gbox, rr, rule_for(spec, float(rr.scale)))
        return finish_read(out, spec)

    def __getstate__(self) -> dict[str, Any]:
        return {"sources": self.sources, "reads": self._reads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.sources = state["sources"]
        self._reads = state["reads"]
        self._lock = threading.Lock()

    def __dask_tokenize__(self) -> Any:
        return ("FakeReader", sorted((h, repr(g)) for h, g in self.sources.items()))


def write_test_raster(
    path: Path | str, data: np.ndarray, gbox: GeoBox, *, nodata: float | None = None
) -> Path:
    """Write ``data`` (``(y, x)`` or ``(band, y, x)``, any GDAL dtype) as a GeoTIFF on ``gbox``.

    Parent folders are created. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = data if data.ndim == 3 else data[None]
    if arr.shape[1:] != gbox.shape.yx:
        raise ValueError(f"raster of shape {arr.shape[1:]} does not fit grid {gbox.shape.yx}")
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=arr.shape[0],
        height=arr.shape[1],
        width=arr.shape[2],
        dtype=arr.dtype,
        crs=gbox.crs.to_wkt() if gbox.crs is not None else None,
        transform=gbox.transform,
        nodata=nodata,
    ) as ds:
        ds.write(arr)
    return path
