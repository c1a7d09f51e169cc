"""ModalityStack: every modality of one tile on one grid, as an ``xarray.Dataset``.

:func:`build_stack` is the per-tile entry point (it runs inside dask tasks: all arguments are
plain, picklable values and every read applies :class:`~eo_fusion.gdal.GDALOptions` itself).
Pixels are read through a :class:`~eo_fusion.sources.reader.Reader` (default: the rasterio one);
pass another (``reader=``) to read from elsewhere or, in tests, from a fake.
Layout (see docs/architecture.md and docs/stacks.md):

* variable ``<m>`` per modality, float32 physical units, NaN = no data, dims
  ``(<m>:band, y, x)`` or ``(<m>:time, <m>:band, y, x)``; coordinate ``<m>:band`` = registry keys;
* variable ``<m>:valid`` (bool), dims ``(y, x)`` or ``(<m>:time, y, x)``;
* a modality on its own sub-grid (``ModalitySpec.resolution``) uses ``<m>:y``/``<m>:x``;
* attributes: ``crs`` (WKT), ``transform``, ``coreg`` (JSON), per variable ``units``,
  ``source_items`` and modality provenance.

:func:`modality_array` gives one modality back with plain ``band``/``time`` dims.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import ModalitySpec, modality_spec
from eo_fusion.coreg.check import CoregOptions, coregister
from eo_fusion.errors import BandError
from eo_fusion.gdal import GDALOptions
from eo_fusion.grid import grid_at_resolution, grid_crs
from eo_fusion.modalities import get_modality
from eo_fusion.sources.positions import reuse_plans
from eo_fusion.sources.reader import RasterioReader, Reader
from eo_fusion.sources.result import ModalityResult

__all__ = ["build_stack", "grid_coords", "loader_for", "modality_array"]

#: A modality loader: ``(items, grid, options, reader) -> ModalityResult``; every pixel it needs
#: comes through ``reader``.
Loader = Callable[[list[NormalizedItem], GeoBox, ModalitySpec, Reader], ModalityResult]


def loader_for(name: str, spec: ModalitySpec | None = None) -> Loader:
    """The source reader of modality ``name`` (from the modality registry).

    Raises:
        ConfigError: the registry does not know ``name`` (the message suggests the closest).
    """
    del spec  # the reader depends on the modality's family only
    return get_modality(name).load_function()


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, list | tuple) and any(isinstance(x, dict | list) for x in v):
        return json.dumps(v, default=str)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _times64(times) -> np.ndarray:
    # Stored as UTC without a zone (numpy datetime64 has none); docs say times are UTC.
    return np.array([np.datetime64(t.astimezone(UTC).replace(tzinfo=None), "ns") for t in times])


def _to_vars(name: str, res: ModalityResult, tile: GeoBox) -> dict[str, xr.DataArray]:
    own = res.gbox != tile
    ydim, xdim = (f"{name}:y", f"{name}:x") if own else ("y", "x")
    coords: dict[str, Any] = {f"{name}:band": list(res.bands)}
    if own:
        coords[ydim], coords[xdim] = grid_coords(res.gbox).values()
    dims: tuple[str, ...] = (f"{name}:band", ydim, xdim)
    vdims: tuple[str, ...] = (ydim, xdim)
    if res.times is not None:
        coords[f"{name}:time"] = _times64(res.times)
        dims = (f"{name}:time", *dims)
        vdims = (f"{name}:time", *vdims)
    attrs = {
        "modality": name,
        "units": list(res.units),
        "source_items": list(res.source_items),
        **{k: _jsonable(v) for k, v in res.attrs.items()},
    }
    if own:
        attrs["transform"] = list(res.gbox.transform)[:6]
    data = xr.DataArray(
        res.data.astype(np.float32, copy=False), dims=dims, coords=coords, attrs=attrs
    )
    vcoords = {k: v for k, v in coords.items() if k != f"{name}:band"}
    valid = xr.DataArray(res.valid.astype(bool), dims=vdims, coords=vcoords)
    return {name: data, f"{name}:valid": valid}


def build_stack(
    tile_gbox: GeoBox,
    items_by_modality: Mapping[str, Sequence[NormalizedItem]],
    modalities: Mapping[str, ModalitySpec],
    *,
    gdal: GDALOptions | None = None,
    coreg: CoregOptions | None = None,
    reader: Reader | None = None,
) -> xr.Dataset:
    """Read, mask, reduce and co-register every modality of one tile.

    Args:
        tile_gbox: the tile grid (usually ``Tile.padded``: core + halo).
        items_by_modality: modality name -> normalised items (from ``Catalog.search``).
        modalities: modality name -> options (bands, mode, aggregate, resolution, options).
            Modalities without items are skipped and listed in the ``missing_modalities`` attr.
        gdal: GDAL settings of the default reader (default :class:`GDALOptions`); recorded in
            the ``gdal`` attribute.
        coreg: co-registration thresholds; per-modality ``options.coreg`` is ``auto``
            (default), ``check`` or ``off`` for modalities whose registry role is optical or
            SAR; the others are not checked.
        reader: where pixels come from (default ``RasterioReader(gdal)``); must be picklable
            and thread-safe when the stack is built in dask tasks.

    Raises:
        ConfigError: a modality the registry does not know, or options that do not apply.

    Returns:
        The ModalityStack (see module doc). Deterministic for the same inputs.
    """
    gdal = gdal or GDALOptions()
    reader = RasterioReader(gdal) if reader is None else reader
    coreg = coreg or CoregOptions()
    # Specs built in code (api, tests) get the job file's checks and typed options here.
    modalities = {name: modality_spec(name, spec) for name, spec in modalities.items()}
    # Resampling plans (taps and weights per source grid) are shared by every band and date
    # of this build, and dropped with it.
    with reuse_plans():
        results, missing = _read_modalities(tile_gbox, items_by_modality, modalities, reader)
    if not results:
        raise BandError(
            f"no items for any modality of tile {tile_gbox}",
            fix="check the search (AOI, dates, max_cloud) or the modality names",
        )
    modes = {n: str(getattr(s.options, "coreg", "off")) for n, s in modalities.items()}
    records = coregister(results, modes, coreg) if len(results) > 1 else {}
    variables: dict[str, xr.DataArray] = {}
    for name, res in results.items():
        variables.update(_to_vars(name, res, tile_gbox))
    ds = xr.Dataset(variables, coords=grid_coords(tile_gbox))
    ds.attrs.update(
        crs=grid_crs(tile_gbox).to_wkt(),
        transform=list(tile_gbox.transform)[:6],
        shape=list(tile_gbox.shape.yx),
        coreg=json.dumps(records, sort_keys=True),
        missing_modalities=missing,
        gdal=json.dumps(gdal.to_dict(), sort_keys=True),
    )
    return ds


def _read_modalities(
    tile_gbox: GeoBox,
    items_by_modality: Mapping[str, Sequence[NormalizedItem]],
    modalities: Mapping[str, ModalitySpec],
    reader: Reader,
) -> tuple[dict[str, ModalityResult], list[str]]:
    """Each modality's loader on its items (in time order) → (results, modalities without items)."""
    results: dict[str, ModalityResult] = {}
    missing = []
    for name in sorted(modalities):
        spec = modalities[name]
        items = sorted(items_by_modality.get(name, ()), key=lambda i: (i.datetime, i.id))
        if not items:
            missing.append(name)
            continue
        gbox = grid_at_resolution(tile_gbox, spec.resolution) if spec.resolution else tile_gbox
        results[name] = loader_for(name, spec)(items, gbox, spec, reader)
    return results, missing


def grid_coords(gbox: GeoBox) -> dict[str, Any]:
    """The stack's ``y``/``x`` pixel-centre coordinates of ``gbox`` (odc-geo names them
    latitude/longitude on geographic grids; the stack keeps one naming)."""
    ys, xs = gbox.coords.values()
    return {"y": ys.values, "x": xs.values}


def modality_array(ds: xr.Dataset, modality: str) -> xr.DataArray:
    """One modality with plain dims ``(band, y, x)`` / ``(time, band, y, x)``.

    Raises:
        BandError: the stack has no such modality (the message lists the ones it has).
    """
    if modality not in ds.data_vars:
        have = [v for v in ds.data_vars if not str(v).endswith(":valid")]
        raise BandError(f"stack has no modality {modality!r}", fix=f"use one of {have}")
    return plain_dims(ds[modality], modality)


def plain_dims(da: xr.DataArray, modality: str) -> xr.DataArray:
    """``da`` with the stack's ``<modality>:band``/``<modality>:time`` dims renamed to
    ``band``/``time`` (other dims unchanged)."""
    rename = {d: str(d).split(":", 1)[1] for d in da.dims if str(d).startswith(f"{modality}:")}
    return da.rename(rename)
