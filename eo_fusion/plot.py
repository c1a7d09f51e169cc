"""Plotting helpers for notebooks: composites, SAR, elevation, class maps and time series.

All functions take xarray objects in the ModalityStack layout (dims ``(..., y, x)``, a ``band``
coordinate holding registry keys, float32 physical units, NaN for no data) and draw on a matplotlib
``Axes`` (a new one when ``ax`` is ``None``), labelling axes with the grid's CRS coordinates (metres
for projected grids) and adding a colour bar or legend. They return the ``Axes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from eo_fusion.errors import BadInputError

#: True colour and common false-colour band triplets (registry keys, in R, G, B order).
COMPOSITES: dict[str, tuple[str, str, str]] = {
    "true": ("s2:B04", "s2:B03", "s2:B02"),
    "false-nir": ("s2:B08", "s2:B04", "s2:B03"),  # vegetation bright red
    "swir": ("s2:B12", "s2:B8A", "s2:B04"),  # burn scars, moisture
    "aerial": ("aerial:red", "aerial:green", "aerial:blue"),
    "aerial-cir": ("aerial:nir", "aerial:red", "aerial:green"),
}


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(6, 6))
    return ax


def _extent(da: xr.DataArray) -> tuple[float, float, float, float] | None:
    """(left, right, bottom, top) of pixel edges from the x/y centre coordinates, if present."""
    if "x" not in da.coords or "y" not in da.coords or da.sizes["x"] < 2 or da.sizes["y"] < 2:
        return None
    x, y = da["x"].values, da["y"].values
    dx, dy = x[1] - x[0], y[1] - y[0]
    return (x[0] - dx / 2, x[-1] + dx / 2, y[-1] + dy / 2, y[0] - dy / 2)


def _label_axes(ax: Any, da: xr.DataArray, title: str | None) -> None:
    units = "m" if _extent(da) is not None else "pixels"
    from matplotlib.ticker import MaxNLocator

    ax.ticklabel_format(useOffset=False, style="plain")  # full map coordinates, no "+5.08e6"
    ax.xaxis.set_major_locator(MaxNLocator(4))  # 6-7 digit coordinates need room
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(f"x ({units})")
    ax.set_ylabel(f"y ({units})")
    if title:
        ax.set_title(title)


def _select_bands(da: xr.DataArray, keys: Sequence[str]) -> xr.DataArray:
    available = [str(b) for b in da["band"].values]
    missing = [k for k in keys if k not in available]
    if missing:
        raise BadInputError(
            f"bands {missing} are not in this array (it has {available})",
            fix="pick another composite or pass bands= explicitly",
        )
    return da.sel(band=list(keys))


def stretch(values: np.ndarray, percentiles: tuple[float, float] = (2, 98)) -> np.ndarray:
    """Scale each channel (last axis) so the given percentiles map to 0 and 1 (NaN-aware)."""
    out = np.empty_like(values, dtype=np.float32)
    for i in range(values.shape[-1]):
        channel = values[..., i]
        finite = channel[np.isfinite(channel)]
        lo, hi = np.percentile(finite, percentiles) if finite.size else (0.0, 1.0)
        out[..., i] = np.clip((channel - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.nan_to_num(out, nan=0.0)


def composite(
    da: xr.DataArray,
    bands: str | Sequence[str] = "true",
    *,
    percentiles: tuple[float, float] = (2, 98),
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """RGB composite of three bands with a percentile stretch.

    Args:
        da: ``(band, y, x)`` array (select one date first for time series).
        bands: a key of :data:`COMPOSITES` or three registry keys in R, G, B order.
        percentiles: lower/upper percentiles mapped to black/white, per channel.
    """
    keys = COMPOSITES[bands] if isinstance(bands, str) else tuple(bands)
    rgb = _select_bands(da, keys).transpose("y", "x", "band").values.astype(np.float32)
    ax = _axes(ax)
    ax.imshow(stretch(rgb, percentiles), extent=_extent(da), interpolation="nearest")
    _label_axes(ax, da, title or f"R,G,B = {', '.join(keys)}")
    return ax


def sar(
    da: xr.DataArray,
    band: str = "s1:VV",
    *,
    in_db: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """One SAR polarisation in dB with a colour bar (linear power is converted: 10·log10)."""
    values = _select_bands(da, [band]).squeeze("band").values.astype(np.float32)
    if not in_db:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = 10 * np.log10(values)
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, (2, 98)) if finite.size else (-25, 0)
    ax = _axes(ax)
    im = ax.imshow(values, extent=_extent(da), cmap="gray", vmin=vmin or lo, vmax=vmax or hi)
    ax.figure.colorbar(im, ax=ax, label=f"{band} backscatter (dB)", shrink=0.8)
    _label_axes(ax, da, title or band)
    return ax


def elevation(
    da: xr.DataArray,
    *,
    band: str | None = None,
    resolution_m: float | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Elevation (metres) coloured by height over a hillshade, with a colour bar.

    Args:
        da: ``(y, x)`` or ``(band, y, x)`` elevation in metres.
        band: registry key to pick when ``da`` has a band dimension (default: the first band).
        resolution_m: pixel size for the hillshade's slope (default: from the x coordinate).
    """
    from matplotlib.colors import LightSource

    if "band" in da.dims:
        da = da.sel(band=band) if band else da.isel(band=0)
    values = da.values.astype(np.float32)
    if resolution_m is None:
        resolution_m = float(abs(da["x"][1] - da["x"][0])) if "x" in da.coords else 1.0
    filled = np.where(np.isfinite(values), values, np.nanmean(values))
    shade = LightSource(azdeg=315, altdeg=45).hillshade(
        filled, vert_exag=1.0, dx=resolution_m, dy=resolution_m
    )
    ax = _axes(ax)
    extent = _extent(da)
    ax.imshow(shade, cmap="gray", extent=extent)
    im = ax.imshow(values, cmap="terrain", alpha=0.6, extent=extent)
    ax.figure.colorbar(im, ax=ax, label="elevation (m)", shrink=0.8)
    _label_axes(ax, da, title or "elevation with hillshade")
    return ax


def continuous(
    da: xr.DataArray,
    *,
    label: str,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """A single-band continuous layer (confidence, NDVI, a probability) with a labelled colour bar.

    The array's ``nodata`` attribute (as set by ``odc-geo``'s ``wrap_xr``) is shown as blank.
    """
    values = da.values.astype(np.float32)
    nodata = da.attrs.get("nodata")
    if nodata is not None and np.isfinite(nodata):
        values = np.where(values == nodata, np.nan, values)
    ax = _axes(ax)
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, extent=_extent(da))
    ax.figure.colorbar(im, ax=ax, label=label, shrink=0.8)
    _label_axes(ax, da, title)
    return ax


def class_map(
    da: xr.DataArray,
    classes: Sequence[dict[str, Any]],
    *,
    ax: Any = None,
    title: str | None = None,
    legend: bool = True,
) -> Any:
    """Categorical map with a legend.

    Args:
        da: ``(y, x)`` integer class values.
        classes: dicts with ``value`` (or ``id``, as in model cards) (int), ``name`` and
            ``color`` (``#rrggbb``), as in the model card and the product's STAC Item.
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    by_value = {int(c.get("value", c.get("id", -1))): c for c in classes}
    values = sorted(by_value)
    cmap = ListedColormap([by_value[v]["color"] for v in values])
    bounds = [*(v - 0.5 for v in values), values[-1] + 0.5]
    data = np.ma.masked_where(~np.isin(da.values, values), da.values)
    ax = _axes(ax)
    ax.imshow(data, cmap=cmap, norm=BoundaryNorm(bounds, cmap.N), extent=_extent(da))
    if legend:
        present = set(np.unique(da.values).tolist())
        handles = [
            Patch(color=by_value[v]["color"], label=f"{v}: {by_value[v]['name']}")
            for v in values
            if v in present
        ]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    _label_axes(ax, da, title)
    return ax


def timeseries(
    da: xr.DataArray,
    *,
    x: float | None = None,
    y: float | None = None,
    mask: xr.DataArray | None = None,
    band: str | None = None,
    ax: Any = None,
    label: str | None = None,
    ylabel: str | None = None,
) -> Any:
    """Curve over time for one point (nearest pixel to ``x, y`` in grid CRS units) or a region.

    Args:
        da: ``(time, y, x)`` or ``(time, band, y, x)`` array.
        x, y: point in the grid's CRS (metres for projected grids).
        mask: boolean ``(y, x)`` region to average over (NaN-aware); used when no point is given.
        band: registry key when ``da`` has a band dimension.
    """
    if "band" in da.dims:
        if band is None:
            raise BadInputError("this array has several bands", fix="pass band='s2:B08' etc.")
        da = da.sel(band=band)
    if x is not None and y is not None:
        series = da.sel(x=x, y=y, method="nearest")
    elif mask is not None:
        series = da.where(mask).mean(dim=("y", "x"), skipna=True)
    else:
        series = da.mean(dim=("y", "x"), skipna=True)
    ax = _axes(ax)
    ax.plot(series["time"].values, series.values, marker="o", ms=3, label=label)
    ax.set_xlabel("date")
    if ylabel or not ax.get_ylabel():  # keep an earlier call's label when adding curves
        ax.set_ylabel(ylabel or "value")
    if label:
        ax.legend()
    ax.figure.autofmt_xdate()
    return ax


def web_map(da: xr.DataArray, **kwargs: Any) -> Any:
    """Interactive web map of a georeferenced array (needs odc-geo's ``explore`` and folium).

    Raises:
        BadInputError: when folium is not installed (install the ``notebooks`` extra).
    """
    try:
        import folium  # noqa: F401
    except ImportError as e:
        raise BadInputError(
            "an interactive map needs the folium package",
            fix="pip install 'eo-fusion[notebooks]' (or pip install folium)",
        ) from e
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor)

    return da.odc.explore(**kwargs)
