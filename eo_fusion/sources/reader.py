"""The one place that reads pixels: a window of an asset, warped onto a target grid.

For each file (local path or HTTP(S) URL, read through GDAL's ``/vsicurl/`` with range requests):

1. compute the source window the target grid needs (odc-geo ``compute_reproject_roi``), so only
   the blocks under the tile are fetched;
2. when the target is ≥ 2x coarser and the file has overviews, read from the overview level that
   is still at least as fine as the target (fewer bytes, less aliasing);
3. convert stored values to physical units (``value * scale + offset``), nodata → NaN;
4. warp onto the target grid with the rule for the band's kind (:mod:`eo_fusion.coreg.resampling`);
   SAR in dB is resampled in linear power and converted back.

All reads run inside ``GDALOptions.env()`` so the settings hold in whichever dask worker runs them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.errors
import rasterio.warp
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.overlap import compute_reproject_roi
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from eo_fusion.catalogs.items import BandAsset
from eo_fusion.coreg.resampling import (
    db_to_linear,
    is_categorical,
    linear_to_db,
    resampling_for,
)
from eo_fusion.errors import ReadError
from eo_fusion.gdal import GDALOptions
from eo_fusion.grid import grid_crs
from eo_fusion.sources.gcps import GCPGeoref, gcp_georef, gcp_window, warp_gcps

__all__ = ["ReadSpec", "gdal_path", "read_assets", "source_geobox"]

#: Warp with the exact coordinate transformer (GDAL's default approximates to 0.125 px, which
#: would eat most of the 0.1 px alignment budget; the exact one costs little at tile sizes).
WARP_TOLERANCE_PX = 0.0


def gdal_path(href: str) -> str:
    """The path GDAL opens: HTTP(S) URLs go through ``/vsicurl/`` (range requests)."""
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("file://"):
        return href[len("file://") :]
    return href


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


def _crs_of(ds: rasterio.DatasetReader, asset: BandAsset) -> CRS:
    if ds.crs is not None:
        return CRS(ds.crs.to_wkt())
    if asset.crs:
        return CRS(asset.crs)
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


def _pick_overview(factors: Sequence[int], shrink: int) -> int | None:
    """Index of the coarsest overview whose factor is ≤ ``shrink`` (None: read full resolution)."""
    best = None
    for i, f in enumerate(factors):
        if f <= shrink:
            best = i
    return best


def _to_physical(raw: np.ndarray, assets: Sequence[BandAsset], file_nodata: float | None):
    out = raw.astype(np.float32, copy=True)
    for i, a in enumerate(assets):
        nodata = a.spec.nodata if a.spec.nodata is not None else file_nodata
        band = out[i]
        bad = ~np.isfinite(band)
        if nodata is not None and np.isfinite(nodata):
            bad |= raw[i] == nodata
        if a.spec.scale != 1.0 or a.spec.offset != 0.0:
            band *= np.float32(a.spec.scale)
            band += np.float32(a.spec.offset)
        band[bad] = np.nan
    return out


def read_assets(
    assets: Sequence[BandAsset],
    gbox: GeoBox,
    spec: ReadSpec,
    *,
    gdal: GDALOptions | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Read bands of ONE file onto ``gbox``; returns ``(band, y, x)`` float32, NaN = no data.

    Args:
        assets: bands of the same ``href`` (one open, one windowed read for all of them).
        gbox: the target grid (a tile, usually with its halo).
        spec: how to resample (see :class:`ReadSpec`).
        gdal: GDAL settings applied around the read.

    Raises:
        ReadError: the file cannot be opened or read; names the URL and the asset.
    """
    if not assets:
        return np.empty((0, *gbox.shape.yx), dtype=np.float32)
    hrefs = {a.href for a in assets}
    if len(hrefs) != 1:
        raise ReadError(f"read_assets got bands of several files {sorted(hrefs)}", fix="group")
    asset0 = assets[0]
    path = gdal_path(asset0.href)
    gdal = gdal or GDALOptions()
    if out is None:
        out = np.empty((len(assets), *gbox.shape.yx), dtype=np.float32)
    out.fill(np.nan)
    try:
        with gdal.env():
            with _sidecar_env(path):
                ds = _open(path)
            with ds:
                georef = gcp_georef(ds)
                if georef is not None:  # radar-geometry file: warp with its GCPs (gcps.py)
                    _read_gcp_file(ds, assets, gbox, spec, gdal, out, georef)
                    return _finish(out, spec)
                src_gbox = source_geobox(ds, asset0)
                rr = _roi(src_gbox, gbox)
                if (
                    rr.roi_src[0].stop <= rr.roi_src[0].start
                    or rr.roi_src[1].stop <= rr.roi_src[1].start
                ):
                    return out  # no overlap: all no data
                ratio = float(rr.scale)
                rule = (
                    spec.resampling
                    if spec.resampling is not None
                    else resampling_for(spec.kind, ratio)
                )
                indexes = [a.band_index for a in assets]
                ovr = None
                # dB values must not be read from overviews (they were averaged in dB when built).
                if rr.read_shrink > 1 and not spec.sar_db_input and spec.calibrate is None:
                    ovr = _pick_overview(ds.overviews(indexes[0]), rr.read_shrink)
                if ovr is None:
                    data, src_read_gbox = _read_window(ds, indexes, src_gbox, rr.roi_src)
                    file_nodata = ds.nodata
                else:
                    with _sidecar_env(path):
                        ods = _open(path, overview_level=ovr)
                    with ods:
                        # Overview pixels tile the full image exactly: derive their grid from the
                        # full-resolution one (JPEG/world-file overviews carry no transform).
                        zoom = Affine.scale(
                            src_gbox.width / ods.width, src_gbox.height / ods.height
                        )
                        ogbox = GeoBox(ods.shape, src_gbox.transform @ zoom, src_gbox.crs)
                        orr = _roi(ogbox, gbox)
                        data, src_read_gbox = _read_window(ods, indexes, ogbox, orr.roi_src)
                        file_nodata = ods.nodata
                        rr = orr
                phys = _to_physical(data, assets, file_nodata)
                if spec.calibrate is not None:  # source pixel space (ovr is None here)
                    phys = spec.calibrate(phys, *rr.roi_src)
                if spec.sar_db_input:
                    phys = db_to_linear(phys)
                if (
                    rr.paste_ok
                    and rr.read_shrink == 1
                    and src_read_gbox.shape == gbox[rr.roi_dst].shape
                ):
                    out[(slice(None), *rr.roi_dst)] = phys
                elif not _axis_aligned_resample(phys, src_read_gbox, out, gbox, rule):
                    _warp(phys, src_read_gbox, out, gbox, rule, gdal)
    except rasterio.errors.RasterioError as e:
        raise ReadError(
            f"reading asset {asset0.asset_key!r} (band {asset0.key}) from {asset0.href} "
            f"failed: {e}",
            fix="check that the file exists and is reachable, or raise GDALOptions timeouts",
        ) from e
    return _finish(out, spec)


def _finish(out: np.ndarray, spec: ReadSpec) -> np.ndarray:
    if spec.sar_db_output:
        out[...] = linear_to_db(out)
    if is_categorical(spec.kind):
        np.round(out, out=out)  # NaN stays NaN
    return out


def _read_gcp_file(
    ds: rasterio.DatasetReader,
    assets: Sequence[BandAsset],
    gbox: GeoBox,
    spec: ReadSpec,
    gdal: GDALOptions,
    out: np.ndarray,
    georef: GCPGeoref,
) -> None:
    """Bands of a GCP-georeferenced file onto ``gbox``: full-resolution window, physical
    values (and ``spec.calibrate``), then the exact GCP (thin-plate-spline) warp."""
    found = gcp_window(ds, georef, gbox)
    if found is None:
        return  # no overlap: all no data
    window, ratio = found
    rows, cols = window
    data = ds.read(
        [a.band_index for a in assets],
        window=Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start),
    )
    phys = _to_physical(data, assets, ds.nodata)
    if spec.calibrate is not None:
        phys = spec.calibrate(phys, rows, cols)
    if spec.sar_db_input:
        phys = db_to_linear(phys)
    rule = spec.resampling if spec.resampling is not None else resampling_for(spec.kind, ratio)
    warp_gcps(phys, georef, window, out, gbox, rule, gdal.num_threads)


_GEOTIFF = (".tif", ".tiff")


def _sidecar_env(path: str) -> rasterio.Env:
    """Let GDAL list the folder of a *local* non-GeoTIFF file, so it finds a world file
    (``.wld``/``.jgw``) next to it; remote files keep directory listing off (see GDALOptions)."""
    local = not path.startswith("/vsi")
    if local and not path.lower().endswith(_GEOTIFF):
        return rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE")
    return rasterio.Env()


def _open(path: str, **kwargs) -> rasterio.DatasetReader:
    if path.lower().endswith(_GEOTIFF):
        return rasterio.open(path, **kwargs)
    # A JPEG/PNG georeferenced only by its asset (remote world file, STAC proj:transform) makes
    # rasterio warn "not georeferenced"; source_geobox then takes the asset's transform. Only
    # these rare formats pay for catch_warnings (not thread-safe in Python < 3.14).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, **kwargs)


def _roi(src_gbox: GeoBox, gbox: GeoBox):
    """Source window for ``gbox``, padded so resampling kernels at the tile edge see real data.

    GDAL widens bilinear/cubic kernels by the downsampling factor; without enough padding the
    edge pixels of a tile would be computed from fewer source pixels than interior ones (a seam).
    """
    rr = compute_reproject_roi(src_gbox, gbox, ttol=0.05)
    if rr.paste_ok:
        return rr
    pad = 2 + int(np.ceil(max(rr.scale2.x, rr.scale2.y, 1.0)))
    return compute_reproject_roi(src_gbox, gbox, ttol=0.05, padding=pad)


def _read_window(
    ds: rasterio.DatasetReader, indexes: list[int], src_gbox: GeoBox, roi: tuple[slice, slice]
) -> tuple[np.ndarray, GeoBox]:
    sy, sx = roi
    win = Window(sx.start, sy.start, sx.stop - sx.start, sy.stop - sy.start)
    data = ds.read(indexes, window=win)
    return data, src_gbox[roi]


def _axis_positions(n_dst: int, d0: float, dres: float, s0: float, sres: float) -> np.ndarray:
    """Source pixel-centre coordinates (0 = centre of the first source pixel) of the target
    pixel centres along one axis."""
    centres = d0 + (np.arange(n_dst) + 0.5) * dres
    return (centres - s0) / sres - 0.5


def _axis_aligned_resample(
    src: np.ndarray, src_gbox: GeoBox, dst: np.ndarray, dst_gbox: GeoBox, rule: Resampling
) -> bool:
    """Fast path for the common case (same CRS, north-up grids): separable bilinear or nearest
    interpolation in numpy, ~5x faster than the general GDAL warper for these grids. Returns
    False (nothing done) when the case does not apply; the GDAL warp then runs.

    Semantics follow GDAL's: target pixel centres are located in source pixel space; a target
    that a NaN source pixel contributes to is NaN; targets outside the source stay NaN.
    """
    if rule not in (Resampling.bilinear, Resampling.nearest) or src_gbox.crs != dst_gbox.crs:
        return False
    st, dt = src_gbox.transform, dst_gbox.transform
    if st.b or st.d or dt.b or dt.d or st.a <= 0 or st.e >= 0 or dt.a <= 0 or dt.e >= 0:
        return False
    if rule is Resampling.bilinear and (dt.a > st.a * 1.0001 or -dt.e > -st.e * 1.0001):
        return False  # downsampling with bilinear: leave it to GDAL
    h, w = src.shape[-2:]
    u = _axis_positions(dst.shape[-1], dt.c, dt.a, st.c, st.a)
    v = _axis_positions(dst.shape[-2], dt.f, dt.e, st.f, st.e)
    inside_u = (u > -0.5) & (u < w - 0.5)
    inside_v = (v > -0.5) & (v < h - 0.5)
    if rule is Resampling.nearest:
        iu = np.clip(np.floor(u + 0.5).astype(np.int64), 0, w - 1)
        iv = np.clip(np.floor(v + 0.5).astype(np.int64), 0, h - 1)
        for i in range(src.shape[0]):
            dst[i] = src[i][iv[:, None], iu[None, :]]
    else:
        u0, fu = _taps(u, w)
        v0, fv = _taps(v, h)
        u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
        rows = np.union1d(v0, v1)  # the source rows any target needs
        r0, r1 = np.searchsorted(rows, v0), np.searchsorted(rows, v1)
        for i in range(src.shape[0]):
            # Separable: along x on the needed source rows, then along y.
            tmp = _lerp(src[i][rows], u0, u1, fu, axis=1)
            dst[i] = _lerp(tmp, r0, r1, fv, axis=0)
    dst[..., ~inside_v, :] = np.nan
    dst[..., :, ~inside_u] = np.nan
    return True


def _taps(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Left tap index and weight of the right tap; targets within half a pixel of the outer
    source centres use the edge pixel alone (weight 0), as GDAL does."""
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n - 1)
    frac = (pos - np.floor(pos)).astype(np.float32)
    frac[(pos < 0) | (pos > n - 1)] = 0
    return i0, frac


def _lerp(a: np.ndarray, i0: np.ndarray, i1: np.ndarray, f: np.ndarray, axis: int) -> np.ndarray:
    """(1 - f) * a[i0] + f * a[i1] along ``axis``; a NaN tap poisons only where its weight > 0."""
    shape = (-1, 1) if axis == 0 else (1, -1)
    f2 = f.reshape(shape)
    left = np.take(a, i0, axis=axis)
    left *= 1 - f2
    right = np.take(a, i1, axis=axis)
    right *= f2
    right[np.broadcast_to(f2 == 0, right.shape)] = 0  # avoid 0 * NaN where the tap is unused
    left += right
    return left


def _warp(
    src: np.ndarray,
    src_gbox: GeoBox,
    dst: np.ndarray,
    dst_gbox: GeoBox,
    rule: Resampling,
    gdal: GDALOptions,
) -> None:
    extra = {}
    if rule in (Resampling.bilinear, Resampling.cubic, Resampling.lanczos):
        # Interpolating kernels keep a 1-pixel radius: GDAL otherwise widens them by the scale
        # change (ignoring rotation), which blurs and moves linear features by up to 0.1 px
        # (GDAL issue 7750; odc-geo does the same). Downsampling uses `average`, not these.
        extra = {"XSCALE": 1, "YSCALE": 1}
    rasterio.warp.reproject(
        src,
        dst,
        src_transform=src_gbox.transform,
        src_crs=grid_crs(src_gbox).to_wkt(),
        dst_transform=dst_gbox.transform,
        dst_crs=grid_crs(dst_gbox).to_wkt(),
        src_nodata=np.nan,
        dst_nodata=np.nan,
        resampling=rule,
        num_threads=max(1, gdal.num_threads),
        tolerance=WARP_TOLERANCE_PX,
        init_dest_nodata=True,
        **extra,
    )
