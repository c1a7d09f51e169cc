"""Writing ModalityStacks: one Zarr store for all tiles (a group per tile), COGs per modality.

Zarr names: stack variables and dims contain ``:`` (``s2-l2a:valid``), which some filesystems
(Windows) refuse in file names, so on disk ``:`` becomes ``.`` (``s2-l2a.valid``);
:func:`open_stack_zarr` restores the in-memory names. Band keys (``s2:B04``) are values, not names,
and are stored unchanged. Writes go to a temporary group/file first and are then moved into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from affine import Affine

from eo_fusion.errors import ProductError

__all__ = ["open_stack_zarr", "write_modality_cogs", "write_stack_zarr"]


def _disk_name(name: str) -> str:
    return name.replace(":", ".")


def _mem_name(name: str) -> str:
    return name.replace(".", ":")


def write_stack_zarr(ds: xr.Dataset, store: str | Path, tile_id: str) -> Path:
    """Write one tile's stack as group ``tile_id`` of the Zarr ``store`` (replacing it)."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    names = {n: _disk_name(str(n)) for n in [*ds.variables, *ds.dims] if ":" in str(n)}
    out = ds.rename(names)
    for name in out.coords:
        if out[name].dtype.kind == "U":  # fixed-width unicode has no Zarr v3 spec yet
            out = out.assign_coords({name: out[name].values.astype(object)})
    tmp_group = f".tmp-{tile_id}"
    shutil.rmtree(store / tmp_group, ignore_errors=True)
    out.to_zarr(store, group=tmp_group, mode="w", consolidated=False)
    final = store / tile_id
    shutil.rmtree(final, ignore_errors=True)
    os.replace(store / tmp_group, final)
    return final


def open_stack_zarr(store: str | Path, tile_id: str) -> xr.Dataset:
    """Open a tile written by :func:`write_stack_zarr`, with the in-memory names restored."""
    ds = xr.open_zarr(store, group=tile_id, consolidated=False)
    names = {n: _mem_name(str(n)) for n in [*ds.variables, *ds.dims] if "." in str(n)}
    return ds.rename(names)


def _cog_crs(crs: str, datum: str | None) -> str:
    """The grid CRS, compounded with the vertical CRS of an elevation layer's datum (EGM2008
    -> ``+ EGM2008 height``, EPSG:3855) when there is one."""
    if not datum:
        return crs
    from eo_fusion.sources.elevation import compound_crs

    compound = compound_crs(crs, datum)
    return compound.to_wkt() if compound is not None else crs


def _bands_of(da: xr.DataArray, name: str) -> tuple[np.ndarray, list[str]]:
    """``(band, y, x)`` pixels and band descriptions (``<date>/<key>`` in a time series)."""
    band_dim = f"{name}:band"
    if f"{name}:time" in da.dims:
        times = [str(t)[:10] for t in da[f"{name}:time"].values]
        desc = [f"{t}/{b}" for t in times for b in da[band_dim].values]
        return da.values.reshape(-1, *da.shape[-2:]), desc
    return da.values, [str(b) for b in da[band_dim].values]


def _write_cog(path: Path, arr: np.ndarray, desc: list[str], profile: dict, tags: dict) -> None:
    """One COG, written to a temporary file first, then moved into place."""
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    tmp = path.with_name(f".{path.stem}.tmp.tif")
    try:
        with rasterio.MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(arr.astype(np.float32))
                for i, d in enumerate(desc, start=1):
                    dst.set_band_description(i, d)
                dst.update_tags(**tags)
            with mem.open() as src:
                cog_translate(
                    src, str(tmp), cog_profiles.get("deflate"), quiet=True, in_memory=True
                )
        os.replace(tmp, path)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise


def write_modality_cogs(ds: xr.Dataset, folder: str | Path, tile_id: str) -> list[Path]:
    """One COG per modality: ``<folder>/<tile_id>/<modality>.tif``, float32, NaN nodata.

    Bands are the modality's band keys (time series: ``<date>/<key>`` for every date), named in
    the band descriptions. Modalities on their own sub-grid get their own transform. Elevation
    with a known vertical datum gets a ``vertical_datum`` tag and, when the datum names an EPSG
    vertical CRS, a compound CRS (grid CRS + e.g. EGM2008 height).
    """
    out_dir = Path(folder) / tile_id
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in [str(v) for v in ds.data_vars if "modality" in ds[v].attrs]:
        attrs = ds[name].attrs
        arr, desc = _bands_of(ds[name], name)
        tags = {"modality": name, "units": json.dumps(attrs.get("units", []))}
        if attrs.get("vertical_datum"):
            tags["vertical_datum"] = str(attrs["vertical_datum"])
        profile = {
            "driver": "GTiff",
            "dtype": "float32",
            "count": arr.shape[0],
            "height": arr.shape[1],
            "width": arr.shape[2],
            "crs": _cog_crs(ds.attrs["crs"], attrs.get("vertical_datum")),
            "transform": Affine(*(attrs.get("transform") or ds.attrs["transform"])),
            "nodata": np.nan,
        }
        path = out_dir / f"{name}.tif"
        try:
            _write_cog(path, arr, desc, profile, tags)
        except Exception as e:
            raise ProductError(
                f"writing COG {path} for modality {name} of tile {tile_id} failed: {e}",
                fix="check free disk space and write permission",
            ) from e
        paths.append(path)
    return paths
