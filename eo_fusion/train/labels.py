"""Reference labels for training jobs: vector fields or class rasters -> model classes.

:func:`read_fields` is the I/O edge: it reads the label file (any CRS), applies the optional
mapping table and returns :class:`Fields`: one row per field (polygon) with its model class, in the
target grid's CRS. Class rasters are polygonised into connected regions of one value, so the same
sampling and split rules apply to both kinds of labels. :func:`rasterize_fields` burns fields onto
a grid (pixel centres inside a polygon; smaller fields on top of larger ones).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from odc.geo.geobox import GeoBox

from eo_fusion.errors import BadInputError
from eo_fusion.train.job import LabelsSpec

log = logging.getLogger(__name__)

__all__ = ["ClassInfo", "Fields", "rasterize_fields", "read_fields", "read_mapping"]


@dataclass(frozen=True)
class ClassInfo:
    """A model class: ``id`` (the value the map job writes) and its name."""

    id: int
    name: str


@dataclass
class Fields:
    """Labelled fields in the grid CRS.

    Attributes:
        frame: GeoDataFrame with columns ``field`` (0..N-1), ``field_id`` (the file's id),
            ``cls`` (class index 0..K-1 into ``classes``) and ``geometry``.
        classes: the model classes, in class-index order.
        dropped: source value -> number of fields dropped (unmapped or ignored codes).
    """

    frame: Any
    classes: list[ClassInfo]
    dropped: dict[str, int] = field(default_factory=dict)


def read_mapping(path: Path, col_from: str = "from", col_to: str = "to") -> dict[str, str]:
    """A mapping table: CSV with columns ``col_from``/``col_to``, or a YAML mapping."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"label mapping table {path} not found", fix="check labels.mapping")
    if path.suffix.lower() in (".yaml", ".yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, Mapping):
            raise BadInputError(f"{path}: expected 'code: class' lines", fix="write a mapping")
        return {str(k): str(v) for k, v in data.items()}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if col_from not in cols or col_to not in cols:
            raise BadInputError(
                f"{path}: columns {col_from!r} and {col_to!r} not both found (it has {cols})",
                fix="set labels.mapping_from / labels.mapping_to to its column names",
            )
        return {str(r[col_from]).strip(): str(r[col_to]).strip() for r in reader}


def _read_vector(spec: LabelsSpec):  # type: ignore[no-untyped-def]
    import geopandas as gpd

    path = Path(spec.path)
    if not path.exists():
        raise BadInputError(f"labels file {path} not found", fix="check labels.path")
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            gdf = gpd.read_parquet(path)
        else:
            gdf = gpd.read_file(path, layer=spec.layer) if spec.layer else gpd.read_file(path)
    except Exception as e:  # pyogrio/arrow raise many types; name the file either way
        raise BadInputError(f"labels file {path} could not be read: {e}", fix="check it") from e
    if gdf.crs is None:
        raise BadInputError(f"labels file {path} has no CRS", fix="set the file's CRS")
    missing = [c for c in (spec.class_column, spec.name_column, spec.id_column) if c]
    missing = [c for c in missing if c not in gdf.columns]
    if missing:
        raise BadInputError(
            f"labels file {path} has no column(s) {missing} (it has {list(gdf.columns)})",
            fix="set labels.class_column / name_column / id_column to existing columns",
        )
    return gdf


def _polygonise_raster(spec: LabelsSpec):  # type: ignore[no-untyped-def]
    import geopandas as gpd
    import rasterio
    import rasterio.features
    import shapely.geometry

    path = Path(spec.path)
    if not path.exists():
        raise BadInputError(f"labels raster {path} not found", fix="check labels.path")
    with rasterio.open(path) as src:
        data = src.read(1)
        ok = np.ones(data.shape, bool) if src.nodata is None else data != src.nodata
        shapes = rasterio.features.shapes(data, mask=ok, transform=src.transform)
        rows = [(int(v), shapely.geometry.shape(g)) for g, v in shapes]
        crs = src.crs
    values, geoms = zip(*rows, strict=True) if rows else ((), ())
    return gpd.GeoDataFrame({"value": list(values)}, geometry=list(geoms), crs=crs)


def _as_key(v: Any) -> str:
    # 3.0 and 3 are the same code (pandas reads integer columns with NaN as floats).
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def _classes_of(
    values: list[str], spec: LabelsSpec, names: Mapping[str, str]
) -> tuple[list[ClassInfo], dict[str, int]]:
    """Classes (integer values are their own ids, text classes get 1..K) and value -> index."""
    uniq = sorted(set(values), key=lambda v: (not v.lstrip("-").isdigit(), _num(v), v))
    out = []
    for i, v in enumerate(uniq, start=1):
        cid = int(v) if v.lstrip("-").isdigit() else i
        out.append(ClassInfo(cid, spec.classes.get(cid) or names.get(v) or str(v)))
    return out, {v: i for i, v in enumerate(uniq)}


def _num(v: str) -> int:
    return int(v) if v.lstrip("-").isdigit() else 0


def read_fields(spec: LabelsSpec, crs: Any) -> Fields:
    """Read the labels, map them to model classes and reproject them to ``crs`` (None: keep)."""
    gdf = _polygonise_raster(spec) if spec.is_raster else _read_vector(spec)
    column = "value" if spec.is_raster else str(spec.class_column)
    source = [_as_key(v) for v in gdf[column]]
    mapping = (
        read_mapping(Path(spec.mapping), spec.mapping_from, spec.mapping_to)
        if spec.mapping
        else None
    )
    ignore = {_as_key(v) for v in spec.ignore}
    keep: list[int] = []
    values: list[str] = []
    dropped: dict[str, int] = {}
    for i, v in enumerate(source):
        target = v if mapping is None else mapping.get(v)
        if target is None and spec.unmapped == "error":
            raise BadInputError(
                f"labels {Path(spec.path).name}: code {v!r} (row {i}) is not in the mapping "
                f"table {spec.mapping}",
                fix="add it to the table, or set labels.unmapped: drop",
            )
        if target is None or target in ignore or v in ignore:
            dropped[v] = dropped.get(v, 0) + 1
            continue
        keep.append(i)
        values.append(_as_key(target))
    if dropped:
        log.warning("labels: dropped %d field(s) with codes %s", sum(dropped.values()), dropped)
    if not keep:
        raise BadInputError(
            f"labels {Path(spec.path).name}: no field has a usable class",
            fix="check labels.class_column, labels.ignore and the mapping table",
        )
    names: dict[str, str] = {}
    if spec.name_column and mapping is None:
        for i in keep:
            names.setdefault(_as_key(gdf[column].iloc[i]), str(gdf[spec.name_column].iloc[i]))
    classes, index = _classes_of(values, spec, names)
    sub = gdf.iloc[keep].copy()
    ids = sub[spec.id_column].astype(str).tolist() if spec.id_column else [str(i) for i in keep]
    frame = sub[["geometry"]] if crs is None else sub[["geometry"]].to_crs(crs)
    frame["field"] = np.arange(len(keep))
    frame["field_id"] = ids
    frame["cls"] = [index[v] for v in values]
    frame = frame[~frame.geometry.is_empty & frame.geometry.notna()].reset_index(drop=True)
    frame["field"] = np.arange(len(frame))
    return Fields(frame=frame, classes=classes, dropped=dropped)


def rasterize_fields(fields: Fields, gbox: GeoBox) -> np.ndarray:
    """``(y, x)`` int32 field index per pixel (-1 = no field); small fields drawn on top."""
    from rasterio.features import rasterize

    frame = fields.frame
    if not len(frame):
        return np.full(gbox.shape.yx, -1, dtype=np.int32)
    order = np.argsort(-frame.geometry.area.to_numpy(), kind="stable")
    shapes = [(frame.geometry.iloc[i], int(frame["field"].iloc[i])) for i in order]
    return rasterize(
        shapes, out_shape=gbox.shape.yx, transform=gbox.transform, fill=-1, dtype="int32"
    )
