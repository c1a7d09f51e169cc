"""Build STAC Items, Collections and a static catalog (+ stac-geoparquet) from local files.

Supported inputs: GeoTIFF/COG (single or multi-band), JPEG/PNG with a world file (``.wld``,
``.jgw``) and a CRS sidecar (``.prj``/``.wkt``), LAS/LAZ point clouds (laspy header: bounds, CRS,
point count) and OSM PBF extracts (bbox from the file header, else from the nodes via pyrosm).

Conventions of the items written here:

* STAC 1.1 items with the projection (v2: ``proj:code`` or ``proj:wkt2``), eo, raster, sar and
  pointcloud extensions as relevant; ``bbox``/``geometry`` in EPSG:4326 (lon, lat).
* Each band's ``eo:bands[i].name`` is its band-registry key (``s2:B04``), so normalisation needs no
  alias table for local items; ``raster:bands`` carries scale/offset/nodata/unit.
* ``eo_fusion:modality`` in the properties names the modality; one Collection per modality.
* Asset hrefs are relative in what is written to disk (the catalog can be moved or served).
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
import rasterio
from rasterio.crs import CRS
from rasterio.warp import transform_bounds, transform_geom

from eo_fusion.bands import REGISTRY, S2_ALIASES, SAR_ALIASES
from eo_fusion.catalogs.normalize import MODALITIES, MODALITY_PROPERTY, place_band
from eo_fusion.errors import BadInputError

EXT_PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EXT_EO = "https://stac-extensions.github.io/eo/v1.0.0/schema.json"
EXT_RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
EXT_SAR = "https://stac-extensions.github.io/sar/v1.0.0/schema.json"
EXT_PC = "https://stac-extensions.github.io/pointcloud/v2.0.0/schema.json"

RASTER_SUFFIXES = {".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2"}
_MEDIA = {
    ".tif": pystac.MediaType.GEOTIFF,
    ".tiff": pystac.MediaType.GEOTIFF,
    ".jpg": pystac.MediaType.JPEG,
    ".jpeg": pystac.MediaType.JPEG,
    ".png": pystac.MediaType.PNG,
    ".jp2": pystac.MediaType.JPEG2000,
    ".las": "application/vnd.las",
    ".laz": "application/vnd.laszip",
    ".pbf": "application/vnd.openstreetmap.data+pbf",
    ".gpkg": "application/geopackage+sqlite3",
    ".geojson": pystac.MediaType.GEOJSON,
    ".json": pystac.MediaType.JSON,
}
DateTime = datetime  # alias: ItemSpec has a field named `datetime`
_DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?(?!\d)")


@dataclass(frozen=True)
class AssetSpec:
    """One file of an item.

    Attributes:
        key: asset key (also written to the item; never used to build file names).
        path: the file.
        band_keys: registry key per band (``None`` entries: band not placed, named by
            ``band_names``); ``None`` = read from the file's band descriptions.
        band_names: names for bands without a registry key (e.g. an NDVI date).
        roles: STAC roles; non-``data`` assets (metadata, vectors) carry no band metadata.
        units / scale / offset / nodata: encoding of every band (``None``: registry default for
            scale/offset, the file's own nodata).
    """

    key: str
    path: Path
    band_keys: tuple[str | None, ...] | None = None
    band_names: tuple[str, ...] | None = None
    roles: tuple[str, ...] = ("data",)
    title: str | None = None
    units: str | None = None
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None


@dataclass(frozen=True)
class ItemSpec:
    """What an item is made of; the builder reads the files for geometry and grid.

    ``datetime`` or both ``start``/``end`` must be given (UTC). ``crs`` overrides/declares the CRS
    of files that carry none (WKT, EPSG code); ``extra_extensions`` adds schema URIs.
    """

    id: str
    modality: str
    assets: tuple[AssetSpec, ...]
    datetime: DateTime | None = None
    start: DateTime | None = None
    end: DateTime | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    crs: str | None = None
    collection: str | None = None


# ------------------------------------------------------------------------------------------------
# reading file metadata
# ------------------------------------------------------------------------------------------------


def _sidecar_crs(path: Path) -> str | None:
    for suffix in (".prj", ".wkt"):
        for cand in (path.with_suffix(suffix), path.with_name(path.stem + "-srs" + suffix)):
            if cand.is_file():
                return cand.read_text(encoding="utf-8").strip()
    return None


def _crs_fields(crs: CRS) -> dict[str, Any]:
    epsg = crs.to_epsg(confidence_threshold=90)
    if epsg:
        return {"proj:code": f"EPSG:{epsg}"}
    return {"proj:wkt2": crs.to_wkt(version="WKT2_2019")}


def _footprint(crs: CRS, bounds: Sequence[float]) -> tuple[list[float], dict[str, Any]]:
    """bbox and polygon in EPSG:4326 of projected ``bounds`` (edges densified)."""
    x0, y0, x1, y1 = bounds
    bbox = list(transform_bounds(crs, "EPSG:4326", x0, y0, x1, y1, densify_pts=21))
    poly = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
    geom = transform_geom(crs, "EPSG:4326", poly, antimeridian_cutting=True, precision=7)
    return [round(v, 7) for v in bbox], dict(geom)


@dataclass
class _RasterInfo:
    crs: CRS
    bounds: tuple[float, float, float, float]
    transform: list[float]
    shape: list[int]
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]
    tags: dict[str, str]
    res: float


_WORLD_SUFFIXES = (".wld", ".jgw", ".jpgw", ".pgw", ".pngw", ".tfw")


def world_file_transform(path: Path) -> list[float] | None:
    """Affine (a, b, c, d, e, f) from a world file next to ``path``, or ``None``.

    A world file holds A, D, B, E, C, F where (C, F) is the *centre* of the upper-left pixel;
    the affine origin is its outer corner. Read here rather than left to GDAL, which only finds
    sidecars when directory listing is enabled.
    """
    for suffix in _WORLD_SUFFIXES:
        wld = path.with_suffix(suffix)
        if wld.is_file():
            vals = [float(v) for v in wld.read_text(encoding="utf-8").split()[:6]]
            a, d, b, e, c, f = vals
            return [a, b, c - a / 2 - b / 2, d, e, f - d / 2 - e / 2]
    return None


def _read_raster(path: Path, crs_override: str | None) -> _RasterInfo:
    try:
        with warnings.catch_warnings():
            # A JPEG/PNG whose world file GDAL did not look for opens "not georeferenced";
            # the world file is read below instead.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(path)
        with ds:
            crs = ds.crs
            if crs_override or crs is None:
                text = crs_override or _sidecar_crs(path)
                if not text:
                    raise BadInputError(
                        f"{path}: the file declares no CRS",
                        fix="add a .prj/.wkt sidecar or pass --crs",
                    )
                crs = CRS.from_user_input(text)
            t = ds.transform
            if t.is_identity and path.suffix.lower() not in (".tif", ".tiff"):
                wt = world_file_transform(path)
                if wt is None:
                    raise BadInputError(
                        f"{path}: no georeferencing (no world file)",
                        fix="add a world file (.wld/.jgw) next to the image",
                    )
                t = rasterio.Affine(*wt)
            return _RasterInfo(
                crs=crs,
                bounds=_bounds(t, ds.height, ds.width),
                transform=[t.a, t.b, t.c, t.d, t.e, t.f],
                shape=[ds.height, ds.width],
                count=ds.count,
                dtype=ds.dtypes[0],
                nodata=ds.nodata,
                descriptions=tuple(ds.descriptions),
                tags=dict(ds.tags()),
                res=abs(t.a),
            )
    except rasterio.errors.RasterioIOError as e:
        raise BadInputError(f"{path}: not a readable raster ({e})", fix="check the file") from e


def _bounds(t: Any, height: int, width: int) -> tuple[float, float, float, float]:
    xs = [t.c, t.c + t.a * width + t.b * height]
    ys = [t.f, t.f + t.d * width + t.e * height]
    return min(xs), min(ys), max(xs), max(ys)


def _band_key_from_description(desc: str | None, modality: str) -> str | None:
    return place_band([desc], modality, None)


def _band_objects(
    info: _RasterInfo, spec: AssetSpec, modality: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(eo:bands, raster:bands) for a raster asset; eo name = registry key or a plain name."""
    keys = spec.band_keys or tuple(
        _band_key_from_description(d, modality) for d in info.descriptions
    )
    if len(keys) != info.count:
        raise BadInputError(
            f"{spec.path}: {len(keys)} band keys given for {info.count} bands",
            fix="give one key per band (use '-' for bands to leave unplaced)",
        )
    eo, rb = [], []
    for i, key in enumerate(keys):
        reg = REGISTRY.get(key) if key else None
        name = key or (spec.band_names[i] if spec.band_names else None) or info.descriptions[i]
        band: dict[str, Any] = {"name": name or f"band{i + 1}"}
        if reg and reg.wavelength_nm is not None:
            band["center_wavelength"] = round(reg.wavelength_nm / 1000.0, 4)  # STAC: micrometres
            band["full_width_half_max"] = round((reg.bandwidth_nm or 0) / 1000.0, 4)
        if reg and reg.description:
            band["description"] = reg.description
        eo.append(band)
        r: dict[str, Any] = {"data_type": info.dtype, "spatial_resolution": round(info.res, 6)}
        nodata = spec.nodata if spec.nodata is not None else info.nodata
        if nodata is not None and nodata == nodata:  # NaN nodata is implied by float dtype
            r["nodata"] = nodata
        scale = spec.scale if spec.scale is not None else (reg.scale if reg else None)
        offset = spec.offset if spec.offset is not None else (reg.offset if reg else None)
        if scale is not None:
            r["scale"] = scale
        if offset is not None:
            r["offset"] = offset
        units = spec.units or (reg.units if reg else None)
        if units:
            r["unit"] = units
        rb.append(r)
    return eo, rb


# ------------------------------------------------------------------------------------------------
# LAS and OSM PBF
# ------------------------------------------------------------------------------------------------


def _las_info(path: Path, crs_override: str | None) -> tuple[CRS, list[float], dict[str, Any]]:
    import laspy

    with laspy.open(path) as fh:
        h = fh.header
        crs = None
        try:
            crs = h.parse_crs()
        except Exception:
            crs = None
        text = crs_override or (None if crs else _sidecar_crs(path))
        if text:
            crs = CRS.from_user_input(text)
        elif crs is not None:
            crs = CRS.from_wkt(crs.to_wkt())
        if crs is None:
            raise BadInputError(f"{path}: no CRS in the LAS header", fix="pass --crs")
        bounds = [float(h.mins[0]), float(h.mins[1]), float(h.maxs[0]), float(h.maxs[1])]
        props = {
            "pc:count": int(h.point_count),
            "pc:type": "lidar",
            "pc:schemas": [
                {"name": d.name, "size": max(1, d.num_bits // 8), "type": _pc_type(d)}
                for d in h.point_format.dimensions
            ],
        }
        if h.creation_date:
            props["eo_fusion:las_creation_date"] = h.creation_date.isoformat()
    return crs, bounds, props


def _pc_type(dim: Any) -> str:
    kind = getattr(dim, "kind", None)
    name = str(getattr(kind, "name", "")).lower()
    if "float" in name:
        return "floating"
    if "unsigned" in name:
        return "unsigned"
    return "signed"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> Iterable[tuple[int, int, Any]]:
    """Minimal protobuf walker: yields (field number, wire type, value)."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        num, wt = tag >> 3, tag & 7
        val: Any
        if wt == 0:
            val, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            val, i = buf[i : i + n], i + n
        elif wt == 1:
            val, i = buf[i : i + 8], i + 8
        elif wt == 5:
            val, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, val


def _zigzag(v: int) -> int:
    return (v >> 1) ^ -(v & 1)


def osm_pbf_bbox(path: Path) -> list[float] | None:
    """bbox (lon/lat) from the ``HeaderBBox`` of an OSM PBF file, or ``None`` if it has none.

    The header is the first blob of the file (OSM PBF format: 4-byte length, BlobHeader, Blob with
    zlib data, HeaderBlock field 1 = HeaderBBox in nanodegrees).
    """
    with path.open("rb") as fh:
        (hlen,) = struct.unpack(">I", fh.read(4))
        header = dict((n, v) for n, _, v in _fields(fh.read(hlen)))
        if header.get(1) != b"OSMHeader":
            return None
        blob = dict((n, v) for n, _, v in _fields(fh.read(header[3])))
    data = blob.get(1) or (zlib.decompress(blob[3]) if 3 in blob else None)
    if data is None:
        return None
    block = dict((n, v) for n, _, v in _fields(data))
    if 1 not in block:
        return None
    bb = {n: _zigzag(v) * 1e-9 for n, _, v in _fields(block[1])}  # left,right,top,bottom
    return [bb[1], bb[4], bb[2], bb[3]]


def _osm_bbox_from_nodes(path: Path) -> list[float]:
    from pyrosm import OSM

    nodes = OSM(str(path)).get_data_by_custom_criteria(
        custom_filter={}, filter_type="keep", keep_nodes=True, keep_ways=False, keep_relations=False
    )
    if nodes is None or nodes.empty:
        raise BadInputError(f"{path}: no nodes found to compute a bbox", fix="check the extract")
    return [float(v) for v in nodes.total_bounds]


# ------------------------------------------------------------------------------------------------
# items
# ------------------------------------------------------------------------------------------------


def datetime_from_name(name: str) -> datetime | None:
    """A date (and time) embedded in a file or folder name (``2015-07-11``, ``20170613T101031``)."""
    m = _DATE_IN_NAME.search(name)
    if not m:
        return None
    y, mo, d, hh, mm, ss = (int(g) if g else 0 for g in m.groups())
    try:
        return datetime(y, mo, d, hh, mm, ss, tzinfo=UTC)
    except ValueError:
        return None


def _media(path: Path) -> str:
    return str(_MEDIA.get(path.suffix.lower(), "application/octet-stream"))


def build_item(spec: ItemSpec) -> pystac.Item:
    """Read the files of ``spec`` and return a STAC item (absolute asset hrefs)."""
    if spec.modality not in MODALITIES:
        raise BadInputError(
            f"item {spec.id}: unknown modality '{spec.modality}'",
            fix=f"use one of {', '.join(MODALITIES)}",
        )
    if spec.datetime is None and not (spec.start and spec.end):
        raise BadInputError(
            f"item {spec.id}: no acquisition time found in the files or their names",
            fix="pass --datetime (ISO 8601) or start/end",
        )
    props: dict[str, Any] = {MODALITY_PROPERTY: spec.modality, **spec.properties}
    if spec.start and spec.end:
        props["start_datetime"] = spec.start.isoformat().replace("+00:00", "Z")
        props["end_datetime"] = spec.end.isoformat().replace("+00:00", "Z")
    exts = {EXT_PROJ}
    footprint: tuple[list[float], dict[str, Any], float] | None = None  # bbox, geometry, res
    assets: dict[str, pystac.Asset] = {}
    for a in spec.assets:
        path = a.path.resolve()
        if not path.is_file():
            raise BadInputError(f"item {spec.id}: file not found: {path}", fix="check the path")
        suffix = path.suffix.lower()
        extra: dict[str, Any] = {}
        if "data" in a.roles and suffix in RASTER_SUFFIXES:
            info = _read_raster(path, spec.crs)
            extra.update(_crs_fields(info.crs))
            extra["proj:transform"] = info.transform  # full precision: grids must match exactly
            extra["proj:shape"] = info.shape
            extra["gsd"] = round(info.res, 6)
            eo, rb = _band_objects(info, a, spec.modality)
            extra["eo:bands"], extra["raster:bands"] = eo, rb
            exts |= {EXT_EO, EXT_RASTER}
            if footprint is None or info.res < footprint[2]:  # finest asset defines footprint
                fp = _footprint(info.crs, info.bounds)
                footprint = (fp[0], fp[1], info.res)
        elif suffix in (".las", ".laz"):
            crs, bounds, pc = _las_info(path, spec.crs)
            extra.update(_crs_fields(crs))
            props.update(pc)
            exts.add(EXT_PC)
            if footprint is None:
                fp = _footprint(crs, bounds)
                footprint = (fp[0], fp[1], float("inf"))
        elif suffix == ".pbf":
            bbox = osm_pbf_bbox(path) or _osm_bbox_from_nodes(path)
            if footprint is None:
                fp = _footprint(CRS.from_epsg(4326), bbox)
                footprint = (fp[0], fp[1], float("inf"))
            props.setdefault("proj:code", "EPSG:4326")
        assets[a.key] = pystac.Asset(
            href=str(path),
            media_type=_media(path),
            roles=list(a.roles),
            title=a.title,
            extra_fields=extra,
        )
    if footprint is None:
        raise BadInputError(
            f"item {spec.id}: none of its files gives a footprint",
            fix="include a raster, LAS or PBF file in the item",
        )
    if spec.modality.startswith("s1"):
        exts.add(EXT_SAR)
        props.setdefault("sar:instrument_mode", "IW")
        props.setdefault("sar:frequency_band", "C")
        props.setdefault("sar:product_type", "GRD")
        pols = sorted({k.split(":")[1] for a in spec.assets for k in (a.band_keys or ()) if k})
        props.setdefault("sar:polarizations", pols or ["VV", "VH"])
    bbox, geom = footprint[0], footprint[1]
    item = pystac.Item(
        id=spec.id,
        geometry=geom,
        bbox=bbox,
        datetime=spec.datetime,
        properties=props,
        stac_extensions=sorted(exts),
        collection=spec.collection or spec.modality,
    )
    for k, v in assets.items():
        item.add_asset(k, v)
    return item


def specs_from_paths(
    paths: Iterable[Path],
    *,
    modality: str | None = None,
    when: datetime | None = None,
    band_keys: Sequence[str | None] | None = None,
    units: str | None = None,
    crs: str | None = None,
) -> list[ItemSpec]:
    """One item per file (folders are walked); options fill in what files do not say.

    Modality: ``modality`` if given, else ``.las``/``.laz`` -> lidar, ``.pbf`` -> osm, JPEG/PNG
    -> aerial, GeoTIFF with Sentinel-2 band names -> s2-l2a/s2-l1c by ``L2A``/``L1C`` in the name,
    with VV/VH -> s1-grd. Datetime: ``when``, else the file's ``ACQUISITION``/``TIFFTAG_DATETIME``
    tag, else a date in the file name.
    """
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(
                f
                for f in p.rglob("*")
                if f.suffix.lower() in RASTER_SUFFIXES | {".las", ".laz", ".pbf"}
            )
        else:
            files.append(p)
    specs = []
    for f in files:
        # The raster is read at most once here: its tags serve the datetime too.
        mod, info = (modality, None) if modality else _guess_file_modality(f, crs)
        dt = when or _file_datetime(f, info) or datetime_from_name(f.name)
        keys = tuple(None if k in (None, "-") else k for k in band_keys) if band_keys else None
        specs.append(
            ItemSpec(
                id=_safe_id(f.stem),
                modality=mod,
                assets=(AssetSpec(key="data", path=f, band_keys=keys, units=units),),
                datetime=dt,
                crs=crs,
            )
        )
    return specs


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "item"


def _file_datetime(path: Path, info: _RasterInfo | None = None) -> datetime | None:
    """Acquisition time from a GeoTIFF's tags (``info``: the file already read, if it was)."""
    if path.suffix.lower() not in {".tif", ".tiff"}:
        return None
    if info is not None:
        tags = info.tags
    else:
        with rasterio.open(path) as ds:
            tags = ds.tags()
    for key in ("ACQUISITION", "ACQUISITION_DATE", "TIFFTAG_DATETIME"):
        text = tags.get(key)
        if text:
            text = text.replace(":", "-", 2) if re.match(r"\d{4}:\d{2}:\d{2}", text) else text
            try:
                dt = datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00"))
            except ValueError:
                continue
            return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return None


def _guess_file_modality(path: Path, crs: str | None) -> tuple[str, _RasterInfo | None]:
    """(modality, the raster's info if it had to be read for the guess)."""
    s = path.suffix.lower()
    if s in (".las", ".laz"):
        return "lidar", None
    if s == ".pbf":
        return "osm", None
    if s in (".jpg", ".jpeg", ".png"):
        return "aerial", None
    info = _read_raster(path, crs)
    descs = {str(d).lower() for d in info.descriptions if d}
    upper = path.name.upper()
    if descs and descs <= set(S2_ALIASES) and descs:
        if "L2A" in upper:
            return "s2-l2a", info
        if "L1C" in upper:
            return "s2-l1c", info
    if descs and descs <= set(SAR_ALIASES):
        return "s1-grd", info
    raise BadInputError(
        f"{path}: cannot tell the modality from the file",
        fix=f"pass --modality (one of {', '.join(MODALITIES)})",
    )


# ------------------------------------------------------------------------------------------------
# catalog
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    """Where a build wrote its outputs."""

    catalog_json: Path
    geoparquet: Path
    n_items: int
    collections: tuple[str, ...]


def build_catalog(
    specs: Sequence[ItemSpec],
    out_dir: Path,
    *,
    catalog_id: str = "local",
    title: str = "Local catalog",
    description: str = "Built by eo-fusion catalog build",
    collection_meta: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[], None] | None = None,
) -> BuildResult:
    """Build items, group them in one Collection per modality, write static STAC + geoparquet.

    The static catalog is self-contained (relative links and asset hrefs) under ``out_dir``;
    ``out_dir/items.parquet`` holds the same items as stac-geoparquet with asset hrefs relative
    to ``out_dir``.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for s in specs:
        items.append(build_item(s))
        if progress:
            progress()
    ids = [i.id for i in items]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise BadInputError(f"duplicate item ids: {dupes}", fix="give each item a unique id")
    catalog = pystac.Catalog(id=catalog_id, description=description, title=title)
    by_coll: dict[str, list[pystac.Item]] = {}
    for it in items:
        by_coll.setdefault(it.collection_id or "items", []).append(it)
    for cid, its in sorted(by_coll.items()):
        meta = dict((collection_meta or {}).get(cid, {}))
        coll = pystac.Collection(
            id=cid,
            description=meta.pop("description", f"{cid} items"),
            extent=pystac.Extent.from_items(its),
            license=meta.pop("license", "other"),
            title=meta.pop("title", None),
            providers=[pystac.Provider(**p) for p in meta.pop("providers", [])] or None,
            extra_fields=meta,
        )
        for it in sorted(its, key=lambda i: (i.datetime or datetime.min.replace(tzinfo=UTC), i.id)):
            coll.add_item(it)
        catalog.add_child(coll)
    catalog.normalize_hrefs(str(out_dir))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    parquet = out_dir / "items.parquet"
    write_geoparquet(items, parquet, relative_to=out_dir)
    return BuildResult(
        catalog_json=out_dir / "catalog.json",
        geoparquet=parquet,
        n_items=len(items),
        collections=tuple(sorted(by_coll)),
    )


def write_geoparquet(items: Sequence[pystac.Item], path: Path, *, relative_to: Path) -> None:
    """Write items as stac-geoparquet; asset hrefs made relative to ``relative_to``."""
    import os

    import stac_geoparquet.arrow as sga

    dicts = []
    for it in items:
        d = it.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = []
        for a in d["assets"].values():
            href = a["href"]
            abs_href = (
                href
                if os.path.isabs(href)
                else str((Path(it.get_self_href() or ".").parent / href).resolve())
            )
            a["href"] = os.path.relpath(abs_href, relative_to)
        dicts.append(d)
    table = sga.parse_stac_items_to_arrow(dicts)
    tmp = path.with_suffix(".parquet.tmp")
    sga.to_parquet(table, tmp)
    tmp.replace(path)
