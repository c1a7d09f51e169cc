"""Benchmark dataset adapters: PASTIS / PASTIS-R and FLAIR-HUB folders -> ModalityStacks.

Each adapter yields one ``xr.Dataset`` per patch in the layout that
:func:`eo_fusion.stack.build_stack` writes (``<m>:band``/``<m>:time`` dims per modality; registry
band keys; float32 physical units; NaN = no data; ``<m>:valid`` masks; label variables with
band ``label:landcover`` or ``label:crop``) so that :func:`eo_fusion.train.data.scene_from_stack`
and the fine-tuning loop consume them like any other stack. The datasets themselves must be
downloaded by the user (they are not reachable from the build machines); the tests write tiny
files in the published layouts.

PASTIS / PASTIS-R (Sainte Fare Garnot & Landrieu 2021; 2022): ``metadata.geojson`` (one feature
per patch: ``ID_PATCH``, ``Fold``, ``dates-S2``/``dates-S1A`` as ``{index: YYYYMMDD}``, geometry
in EPSG:2154), ``DATA_S2/S2_<id>.npy`` ``(T, 10, 128, 128)`` surface reflectance × 10 000 in
band order B02 B03 B04 B05 B06 B07 B08 B8A B11 B12, ``DATA_S1A/S1A_<id>.npy`` ``(T, 3, H, W)``
(VV, VH, VV/VH), ``ANNOTATIONS/TARGET_<id>.npy`` (first channel: 20 semantic classes, 0 =
background, 19 = void). Pixels and labels are read through torchgeo's ``PASTIS`` dataset; dates
and geometry come from the metadata.

FLAIR-HUB (IGN, Garioud et al. 2025): per domain folders named ``<DOMAIN>_<MODALITY>`` holding
one GeoTIFF per patch (``<MODALITY>_<ZONE>_<ROI>.tif``). Modalities read here (patterns in
:data:`FLAIR_HUB_MODALITIES`; adjust them if your copy differs): ``AERIAL_RGBI`` (uint8 R, G, B,
NIR), ``DEM_ELEV`` (DSM, DTM in metres), ``SENTINEL2_TS`` (T × 10 bands, ×10 000, with a sidecar
``*_dates.txt`` of YYYYMMDD lines when available), ``SENTINEL1-ASC_TS`` (T × 2 bands VV, VH),
``AERIAL_LABEL-COSIA`` (19 land-cover classes) and ``ALL_LABEL-LPIS`` (23 crop codes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from eo_fusion.errors import BadInputError

PASTIS_S2_KEYS = tuple(
    f"s2:{b}" for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
)
PASTIS_CLASSES = (
    "background", "meadow", "soft winter wheat", "corn", "winter barley", "winter rapeseed",
    "spring barley", "sunflower", "grapevine", "beet", "winter triticale", "winter durum wheat",
    "fruits, vegetables, flowers", "potatoes", "leguminous fodder", "soybeans", "orchard",
    "mixed cereal", "sorghum", "void label",
)  # fmt: skip
#: FLAIR-HUB modality folder suffix -> (variable name, band keys, scale, temporal).
FLAIR_HUB_MODALITIES: dict[str, tuple[str, tuple[str, ...], float, bool]] = {
    "AERIAL_RGBI": (
        "aerial", ("aerial:red", "aerial:green", "aerial:blue", "aerial:nir"), 1 / 255, False
    ),
    "DEM_ELEV": ("dem", ("elevation:dsm", "elevation:dtm"), 1.0, False),
    "SENTINEL2_TS": ("s2-l2a", PASTIS_S2_KEYS, 1e-4, True),
    "SENTINEL1-ASC_TS": ("s1-grd", ("s1:VV", "s1:VH"), 1.0, True),
}  # fmt: skip
FLAIR_HUB_LABELS = {"AERIAL_LABEL-COSIA": "label:landcover", "ALL_LABEL-LPIS": "label:crop"}
#: Class counts of the two FLAIR-HUB label sets.
FLAIR_HUB_N_CLASSES = {"label:landcover": 19, "label:crop": 23}


def _dates(prop: Any) -> np.ndarray:
    if isinstance(prop, str):
        prop = json.loads(prop)
    items = sorted(prop.items(), key=lambda kv: int(kv[0]))
    return pd.to_datetime([str(v) for _, v in items], format="%Y%m%d").values.astype(
        "datetime64[ns]"
    )


def _grid_coords(bounds: Sequence[float], h: int, w: int) -> dict[str, np.ndarray]:
    x0, y0, x1, y1 = bounds
    rx, ry = (x1 - x0) / w, (y1 - y0) / h
    return {"x": x0 + rx * (np.arange(w) + 0.5), "y": y1 - ry * (np.arange(h) + 0.5)}


def _variable(
    name: str, data: np.ndarray, keys: Sequence[str], times=None
) -> dict[str, xr.DataArray]:
    # Per-modality band/time dims, as build_stack writes them (modalities have different bands).
    band, time = f"{name}:band", f"{name}:time"
    dims = (band, "y", "x") if times is None else (time, band, "y", "x")
    coords: dict[str, Any] = {band: list(keys)}
    if times is not None:
        coords[time] = times
    da = xr.DataArray(data.astype("float32"), dims=dims, coords=coords, attrs={"modality": name})
    valid = np.isfinite(da.values).any(axis=-3)
    vdims = (*dims[:-3], "y", "x")
    vcoords = {time: times} if times is not None else {}
    return {name: da, f"{name}:valid": xr.DataArray(valid, dims=vdims, coords=vcoords)}


def pastis_stacks(
    root: Path,
    *,
    folds: Sequence[int] = (1, 2, 3, 4, 5),
    s1: bool = False,
    s1_units: str = "dB",
) -> Iterator[xr.Dataset]:
    """One stack per PASTIS patch (``root`` holds ``PASTIS-R/`` or is that folder).

    ``s1``: also read ``DATA_S1A`` (PASTIS-R); ``s1_units``: the units of its VV/VH values.
    """
    import geopandas as gpd
    from torchgeo.datasets import PASTIS

    root = Path(root)
    if root.name == PASTIS.directory:
        root = root.parent
    meta_path = root / PASTIS.directory / "metadata.geojson"
    if not meta_path.is_file():
        raise BadInputError(
            f"no PASTIS metadata at {meta_path}", fix="point to the folder that holds PASTIS-R/"
        )
    meta = gpd.read_file(meta_path).set_index("ID_PATCH")
    s2 = PASTIS(str(root), folds=tuple(folds), bands="s2", mode="semantic")
    s1a = PASTIS(str(root), folds=tuple(folds), bands="s1a", mode="semantic") if s1 else None
    for i, patch in enumerate(s2.idxs):
        row = meta.loc[patch]
        sample = s2[i]
        img = sample["image"].numpy() * 1e-4
        img[img <= 0] = np.nan  # 0 is no data in the reflectance files
        h, w = img.shape[-2:]
        variables = _variable("s2-l2a", img, PASTIS_S2_KEYS, _dates(row["dates-S2"]))
        if s1a is not None:
            vv_vh = s1a[i]["image"].numpy()[:, :2]
            variables |= _variable("s1-grd", vv_vh, ("s1:VV", "s1:VH"), _dates(row["dates-S1A"]))
        lab = sample["mask"].numpy().astype("float32")[None]
        variables |= _variable("labels", lab, ("label:crop",))
        ds = xr.Dataset(variables, coords=_grid_coords(row.geometry.bounds, h, w))
        ds.attrs.update(
            crs=str(meta.crs), source_items=[f"PASTIS-{patch}"], fold=int(row["Fold"]),
            class_names=list(PASTIS_CLASSES), s1_units=s1_units,
        )  # fmt: skip
        yield ds


def flair_hub_stacks(root: Path, *, domain: str | None = None) -> Iterator[xr.Dataset]:
    """One stack per FLAIR-HUB patch found under ``root`` (optionally one domain only)."""
    import rasterio

    root = Path(root)
    by_roi = _flair_hub_files(root, domain)
    if not by_roi:
        raise BadInputError(
            f"no FLAIR-HUB modality folders under {root}",
            fix="point to the folder holding <DOMAIN>_AERIAL_RGBI, <DOMAIN>_SENTINEL2_TS, ...",
        )
    for roi, files in sorted(by_roi.items()):
        ref = files.get("AERIAL_RGBI") or next(iter(files.values()))
        with rasterio.open(ref) as src:
            bounds, crs, shape = tuple(src.bounds), src.crs.to_wkt(), src.shape
        variables: dict[str, xr.DataArray] = {}
        for mod, (name, keys, scale, temporal) in FLAIR_HUB_MODALITIES.items():
            if mod in files:
                data, times = _flair_hub_modality(files[mod], shape, len(keys), scale, temporal)
                variables |= _variable(name, data, keys, times)
        for mod, key in FLAIR_HUB_LABELS.items():
            if mod in files:
                with rasterio.open(files[mod]) as src:
                    lab = src.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
                variables |= _variable(
                    f"labels-{key.split(':')[1]}", lab[None].astype("float32"), (key,)
                )
        ds = xr.Dataset(variables, coords=_grid_coords(bounds, *shape))
        ds.attrs.update(crs=crs, source_items=[f"FLAIR-HUB-{roi}"])
        yield ds


def _flair_hub_files(root: Path, domain: str | None) -> dict[str, dict[str, Path]]:
    """``"<DOMAIN>/<ZONE>_<ROI>"`` -> modality -> GeoTIFF, for the known modality folders."""
    by_roi: dict[str, dict[str, Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        dom, _, mod = folder.name.partition("_")
        if (domain and dom != domain) or mod not in {**FLAIR_HUB_MODALITIES, **FLAIR_HUB_LABELS}:
            continue
        for tif in sorted(folder.rglob("*.tif")):
            roi = tif.stem[len(mod) + 1 :] if tif.stem.startswith(mod + "_") else tif.stem
            by_roi.setdefault(f"{dom}/{roi}", {})[mod] = tif
    return by_roi


def _flair_hub_modality(
    path: Path, shape: tuple[int, int], n_bands: int, scale: float, temporal: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """One modality's pixels on the patch grid ``shape`` (bilinear), in physical units with NaN
    for no data: ``(C, H, W)``, or ``(T, C, H, W)`` with its dates when ``temporal``."""
    import rasterio

    with rasterio.open(path) as src:
        data = src.read(
            out_shape=(src.count, *shape), resampling=rasterio.enums.Resampling.bilinear
        )
        nodata = src.nodata
    data = data.astype("float32")
    if nodata is not None:
        data[data == nodata] = np.nan
    data *= scale
    if not temporal:
        return data, None
    data = data.reshape(-1, n_bands, *shape)
    dates_file = path.with_name(path.stem + "_dates.txt")
    if dates_file.is_file():
        lines = dates_file.read_text().split()
        times = pd.to_datetime(lines, format="%Y%m%d").values.astype("datetime64[ns]")
    else:  # no sidecar: placeholder dates 1970-01-01, -02, ... keep the frame order
        times = np.arange(data.shape[0]).astype("datetime64[D]").astype("datetime64[ns]")
    return data, times
