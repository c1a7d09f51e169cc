"""The reader seam: the one protocol through which every pixel of ``sources/`` is read.

A :class:`Reader` reads bands of ONE file onto a target grid::

    reader.read(assets, gbox, spec, out=None) -> (band, y, x) float32, physical units, NaN = no data

Contract (any implementation: GDAL/rasterio here, a fake in :mod:`eo_fusion.testing.fake_reader`,
odc-loader or GDAL's warper later):

* ``assets`` are bands of the same ``href`` (one open, one windowed read for all of them);
  ``gbox`` is the target grid (a tile, a window of a grid, any GeoBox); ``out``, when given, is
  filled in place and returned.
* Values are physical: ``stored * scale + offset`` of each asset's :class:`BandSpec`; the stored
  nodata value, non-finite values and pixels outside the file become NaN.
* Pixels are resampled by :func:`eo_fusion.sources.resample.resampling_for` (``spec.kind`` and the
  target/source pixel-size ratio) unless ``spec.resampling`` says otherwise; SAR in dB is resampled
  in linear power; categorical kinds come back as whole numbers.
* Thread-safe (called from several dask threads at once) and picklable (sent to dask worker
  processes): a reader holds settings, never open files. (:class:`RasterioReader` keeps the
  files it opened in a process-wide pool, outside the reader: :mod:`.open_files`.)
* A file that cannot be read raises :class:`~eo_fusion.errors.ReadError` naming the asset and href.

:class:`RasterioReader` (the default) reads local paths and HTTP(S) URLs (GDAL ``/vsicurl/`` with
range requests):

1. compute the source window the target grid needs (odc-geo ``compute_reproject_roi``), so only
   the blocks under the tile are fetched;
2. when the target is ≥ 2x coarser and the file has overviews, read from the overview level that
   is still at least as fine as the target (fewer bytes, less aliasing);
3. convert stored values to physical units, nodata → NaN;
4. put the pixels onto the target grid (:func:`eo_fusion.sources.resample.place`).

All its reads run inside ``GDALOptions.env()``, so the settings hold in whichever dask worker
runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.overlap import ReprojectInfo
from rasterio.enums import Resampling
from rasterio.windows import Window

from eo_fusion.catalogs.items import BandAsset
from eo_fusion.catalogs.safety import redact_url
from eo_fusion.errors import ReadError
from eo_fusion.gdal import GDALOptions
from eo_fusion.grid import horizontal_crs
from eo_fusion.sources.budget import check_read_budget, watch_gdal_io
from eo_fusion.sources.gcps import GCPGeoref, gcp_georef, gcp_window, warp_gcps
from eo_fusion.sources.open_files import OpenFile, forget, open_dataset, release_files
from eo_fusion.sources.remote import read_with_retries, resolve_all, resolve_redirects
from eo_fusion.sources.resample import (
    db_to_linear,
    is_categorical,
    linear_to_db,
    place,
    resampling_for,
    roi_is_empty,
    source_roi,
)

__all__ = [
    "NullReader",
    "RasterioReader",
    "ReadSpec",
    "Reader",
    "finish_read",
    "gdal_path",
    "new_output",
    "read_assets",
    "release_files",
    "rule_for",
    "source_geobox",
    "to_physical",
]


@dataclass(frozen=True)
class ReadSpec:
    """How to read one group of bands: output kind and whether SAR stays in linear power.

    Attributes:
        kind: band kind that picks the resampling rule (``reflectance``, ``sar``, ...).
        resampling: explicit rule, overriding the kind's rule.
        sar_db_input: the stored SAR values are dB (converted to linear before warping).
        sar_db_output: convert back to dB after warping (else linear power is returned).
    """

    kind: str = "reflectance"
    resampling: Resampling | None = None
    sar_db_input: bool = False
    sar_db_output: bool = False
    #: Applied to the full-resolution source window after scale/offset, before warping:
    #: ``f(values (band, y, x), rows, cols) -> values`` (S1 amplitude DN -> sigma0, whose LUT
    #: is in source pixel coordinates). Overviews are not used when it is set.
    calibrate: Callable[[np.ndarray, slice, slice], np.ndarray] | None = None


@runtime_checkable
class Reader(Protocol):
    """Reads bands of one file onto a grid (see the module doc for the full contract)."""

    def read(
        self,
        assets: Sequence[BandAsset],
        gbox: GeoBox,
        spec: ReadSpec,
        *,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(len(assets), *gbox.shape.yx)`` float32 in physical units, NaN = no data."""
        ...


# --- helpers every reader shares ----------------------------------------------------------------


def new_output(
    assets: Sequence[BandAsset], gbox: GeoBox, out: np.ndarray | None = None
) -> np.ndarray:
    """The NaN-filled ``(band, y, x)`` float32 output of a read; checks the one-file rule."""
    hrefs = {a.href for a in assets}
    if len(hrefs) > 1:
        raise ReadError(
            f"one read got bands of several files {sorted(hrefs)}",
            fix="read the bands of each file separately (read_item_bands groups them by href)",
        )
    if out is None:
        out = np.empty((len(assets), *gbox.shape.yx), dtype=np.float32)
    out.fill(np.nan)
    return out


def rule_for(spec: ReadSpec, ratio: float) -> Resampling:
    """The resampling rule of a read: ``spec.resampling`` or the kind's rule at ``ratio``."""
    return spec.resampling if spec.resampling is not None else resampling_for(spec.kind, ratio)


def to_physical(
    raw: np.ndarray, assets: Sequence[BandAsset], file_nodata: float | None
) -> np.ndarray:
    """Stored values ``(band, y, x)`` → float32 physical units; nodata and non-finite → NaN.

    Each asset's own nodata wins over the file's.
    """
    out = raw.astype(np.float32, copy=True)
    integers = np.issubdtype(raw.dtype, np.integer)  # always finite: no test needed
    for i, a in enumerate(assets):
        nodata = a.spec.nodata if a.spec.nodata is not None else file_nodata
        band = out[i]
        bad = np.zeros(band.shape, bool) if integers else ~np.isfinite(band)
        if nodata is not None and np.isfinite(nodata):
            bad |= raw[i] == nodata
        if a.spec.scale != 1.0 or a.spec.offset != 0.0:
            band *= np.float32(a.spec.scale)
            band += np.float32(a.spec.offset)
        band[bad] = np.nan
    return out


def finish_read(out: np.ndarray, spec: ReadSpec) -> np.ndarray:
    """Output units after resampling: back to dB if asked; class codes rounded (NaN stays)."""
    if spec.sar_db_output:
        out[...] = linear_to_db(out)
    if is_categorical(spec.kind):
        np.round(out, out=out)
    return out


def gdal_path(href: str) -> str:
    """The path GDAL opens: HTTP(S) URLs go through ``/vsicurl/`` (range requests)."""
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("file://"):
        return href[len("file://") :]
    return href


def _crs_of(ds: rasterio.DatasetReader, asset: BandAsset) -> CRS:
    # Only the horizontal part of a compound CRS (a DEM in EPSG:4326+3855) places pixels.
    if ds.crs is not None:
        return horizontal_crs(ds.crs.to_wkt())
    if asset.crs:
        return horizontal_crs(asset.crs)
    raise ReadError(
        f"file {asset.href} (asset {asset.asset_key!r}) has no CRS",
        fix="set BandAsset.crs (e.g. from a .prj/.wkt sidecar or the STAC proj:epsg/proj:wkt2)",
    )


def source_geobox(ds: rasterio.DatasetReader, asset: BandAsset) -> GeoBox:
    """GeoBox of an open dataset; the asset's CRS/transform fill in what the file lacks (a JPEG
    whose world file GDAL did not look for, a file without a CRS)."""
    transform = ds.transform
    if transform.is_identity and asset.transform is not None:
        transform = Affine(*asset.transform[:6])
    return GeoBox(ds.shape, transform, _crs_of(ds, asset))


def _file_geobox(opened: OpenFile, asset: BandAsset) -> GeoBox:
    """:func:`source_geobox` of an open file for ``asset``, computed once per open file (the
    CRS conversion through WKT cost 0.1 ms a read)."""
    key = (asset.transform, asset.crs)
    found = opened.grids.get(key)
    if found is None:
        found = opened.grids[key] = source_geobox(opened.ds, asset)
    return found


# --- the GDAL/rasterio reader -------------------------------------------------------------------


@dataclass(frozen=True)
class RasterioReader:
    """The default :class:`Reader`: rasterio/GDAL windowed reads, overviews, in-memory warp.

    Attributes:
        gdal: GDAL settings applied around every read (HTTP timeouts, cache, threads).
    """

    gdal: GDALOptions = field(default_factory=GDALOptions)

    def read(
        self,
        assets: Sequence[BandAsset],
        gbox: GeoBox,
        spec: ReadSpec,
        *,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read bands of one file onto ``gbox`` (see the module doc).

        Raises:
            ReadError: the file cannot be opened or read; names the URL and the asset.
        """
        out = new_output(assets, gbox, out)
        if not assets:
            return out
        a = assets[0]
        what = f"asset {a.asset_key!r} (band {a.key}) at {redact_url(a.href)}"
        # Redirect hops are checked here (GDAL would follow them unasked); transient failures
        # are retried with GDAL's cache for the file cleared (eo_fusion.sources.remote).
        path = resolve_redirects(gdal_path(a.href), self.gdal)
        dst = out
        read_with_retries(
            lambda extra: self._attempt(dst, assets, gbox, spec, path, what, extra),
            path=path,
            gdal=self.gdal,
            what=what,
        )
        return finish_read(out, spec)

    def prefetch(self, assets: Sequence[BandAsset]) -> None:
        """Get ready to read the files of ``assets`` one after another: their redirects are
        checked at once (concurrent HEAD requests) instead of one round trip per read."""
        resolve_all([gdal_path(a.href) for a in assets], self.gdal)

    def _attempt(
        self,
        out: np.ndarray,
        assets: Sequence[BandAsset],
        gbox: GeoBox,
        spec: ReadSpec,
        path: str,
        what: str,
        extra: dict[str, Any],
    ) -> None:
        """One attempt of :meth:`read` (``extra``: GDAL options for this attempt)."""
        out.fill(np.nan)
        try:
            # One Env for the settings and this attempt's extras (each nested Env costs a
            # config round trip; profiled at ~10 % of a small tile's read time).
            with rasterio.Env(**{**self.gdal.config(), **extra}), watch_gdal_io(what):
                self._read_into(out, assets, gbox, spec, path, what)
        except rasterio.errors.RasterioError as e:
            forget(path)  # the next attempt opens the file afresh
            raise ReadError(
                f"reading {what} failed: {e}",
                fix="check that the file exists and is reachable, or raise GDALOptions timeouts",
            ) from e
        except BaseException:
            forget(path)  # whatever went wrong (a cut transfer, no CRS) is not kept open
            raise

    def _read_source(
        self,
        opened: OpenFile,
        assets: Sequence[BandAsset],
        gbox: GeoBox,
        spec: ReadSpec,
        path: str,
        what: str,
        out: np.ndarray,
    ) -> tuple[np.ndarray, float | None, GeoBox, ReprojectInfo, Resampling] | None:
        """The source pixels for ``gbox`` → (stored values, nodata, their grid, roi, rule); None
        when there is nothing to place (no overlap, or a GCP file already warped into ``out``)."""
        ds = opened.ds
        if "gcps" not in opened.derived:
            opened.derived["gcps"] = gcp_georef(ds)
        georef = opened.derived["gcps"]
        if georef is not None:  # radar-geometry file: warp with its GCPs (gcps.py)
            _read_gcp_file(ds, assets, gbox, spec, self.gdal, out, georef, what)
            return None
        src_gbox = _file_geobox(opened, assets[0])
        rr = source_roi(src_gbox, gbox)
        if roi_is_empty(rr):
            return None  # no overlap: all no data
        rule = rule_for(spec, float(rr.scale))
        indexes = [a.band_index for a in assets]
        # dB values must not be read from overviews (they were averaged in dB when built).
        ovr = None
        if rr.read_shrink > 1 and not spec.sar_db_input and spec.calibrate is None:
            ovr = _pick_overview(ds.overviews(indexes[0]), rr.read_shrink)
        if ovr is None:
            data, read_gbox = _read_window(ds, indexes, src_gbox, rr.roi_src, what, self.gdal)
            nodata = ds.nodata
        else:
            data, nodata, read_gbox, rr = _read_overview(
                path, ovr, indexes, src_gbox, gbox, what, self.gdal
            )
        return data, nodata, read_gbox, rr, rule

    def _read_into(
        self,
        out: np.ndarray,
        assets: Sequence[BandAsset],
        gbox: GeoBox,
        spec: ReadSpec,
        path: str,
        what: str,
    ) -> None:
        with open_dataset(path) as opened:
            found = self._read_source(opened, assets, gbox, spec, path, what, out)
        if found is None:
            return
        data, nodata, read_gbox, rr, rule = found
        phys = to_physical(data, assets, nodata)
        if spec.calibrate is not None:  # source pixel space (never an overview)
            rows, cols = rr.roi_src
            phys = spec.calibrate(phys, slice(rows.start, rows.stop), slice(cols.start, cols.stop))
        if spec.sar_db_input:
            phys = db_to_linear(phys)
        place(phys, read_gbox, out, gbox, rr, rule, self.gdal.num_threads)


def _pick_overview(factors: Sequence[int], shrink: int) -> int | None:
    """Index of the coarsest overview whose factor is ≤ ``shrink`` (None: read full resolution)."""
    best = None
    for i, f in enumerate(factors):
        if f <= shrink:
            best = i
    return best


def _read_overview(
    path: str,
    level: int,
    indexes: list[int],
    src_gbox: GeoBox,
    gbox: GeoBox,
    what: str,
    gdal: GDALOptions,
) -> tuple[np.ndarray, float | None, GeoBox, ReprojectInfo]:
    """Read the window for ``gbox`` from overview ``level`` → (data, nodata, its grid, roi)."""
    with open_dataset(path, level) as opened:
        ods = opened.ds
        # Overview pixels tile the full image exactly: derive their grid from the
        # full-resolution one (JPEG/world-file overviews carry no transform).
        zoom = Affine.scale(src_gbox.width / ods.width, src_gbox.height / ods.height)
        ogbox = GeoBox(ods.shape, src_gbox.transform @ zoom, src_gbox.crs)
        orr = source_roi(ogbox, gbox)
        data, read_gbox = _read_window(ods, indexes, ogbox, orr.roi_src, what, gdal)
        return data, ods.nodata, read_gbox, orr


def _read_gcp_file(
    ds: rasterio.DatasetReader,
    assets: Sequence[BandAsset],
    gbox: GeoBox,
    spec: ReadSpec,
    gdal: GDALOptions,
    out: np.ndarray,
    georef: GCPGeoref,
    what: str,
) -> None:
    """Bands of a GCP-georeferenced file onto ``gbox``: full-resolution window, physical
    values (and ``spec.calibrate``), then the exact GCP (thin-plate-spline) warp."""
    found = gcp_window(ds, georef, gbox)
    if found is None:
        return  # no overlap: all no data
    window, ratio = found
    rows, cols = window
    check_read_budget(
        what=what,
        width=cols.stop - cols.start,
        height=rows.stop - rows.start,
        bands=len(assets),
        dtype=ds.dtypes[assets[0].band_index - 1],
        max_pixels=gdal.max_read_pixels,
        max_bytes=gdal.max_read_bytes,
    )
    data = ds.read(
        [a.band_index for a in assets],
        window=Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start),
    )
    phys = to_physical(data, assets, ds.nodata)
    if spec.calibrate is not None:
        phys = spec.calibrate(phys, rows, cols)
    if spec.sar_db_input:
        phys = db_to_linear(phys)
    rule = rule_for(spec, ratio)
    warp_gcps(phys, georef, window, out, gbox, rule, gdal.num_threads)


def _read_window(
    ds: rasterio.DatasetReader,
    indexes: list[int],
    src_gbox: GeoBox,
    roi: tuple[Any, Any],
    what: str,
    gdal: GDALOptions,
) -> tuple[np.ndarray, GeoBox]:
    sy, sx = roi
    win = Window(sx.start, sy.start, sx.stop - sx.start, sy.stop - sy.start)
    check_read_budget(
        what=what,
        width=int(win.width),
        height=int(win.height),
        bands=len(indexes),
        dtype=ds.dtypes[indexes[0] - 1],
        max_pixels=gdal.max_read_pixels,
        max_bytes=gdal.max_read_bytes,
    )  # refused before GDAL decodes anything
    data = ds.read(indexes, window=win)
    return data, src_gbox[roi]


def read_assets(
    assets: Sequence[BandAsset],
    gbox: GeoBox,
    spec: ReadSpec,
    *,
    gdal: GDALOptions | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``RasterioReader(gdal).read(assets, gbox, spec, out=out)``: one read without a reader."""
    return RasterioReader(gdal or GDALOptions()).read(assets, gbox, spec, out=out)


# --- a reader that reads nothing ----------------------------------------------------------------


@dataclass(frozen=True)
class NullReader:
    """A :class:`Reader` that opens no file and returns all no data (NaN).

    Running a loader through it gives the *layout* of its result (bands, dates, dims) from the
    items' metadata alone; :func:`eo_fusion.api.stack` uses it to build a lazy graph without
    reading pixels.
    """

    def read(
        self,
        assets: Sequence[BandAsset],
        gbox: GeoBox,
        spec: ReadSpec,
        *,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """All-NaN ``(len(assets), *gbox.shape.yx)`` float32."""
        return new_output(assets, gbox, out)
