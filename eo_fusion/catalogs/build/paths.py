"""Files and folders -> item specs: walk, infer each file, group per-band files, date them.

* Folders are walked recursively for rasters (GeoTIFF/COG, JPEG/PNG with a world file, JPEG
  2000), LAS/LAZ and OSM extracts; sidecars (world files, ``.prj``, ``.aux.xml``), JSON and the
  catalog's own files are ignored.
* Single-band files of one acquisition (the same folder, the same name but for the band token:
  ``..._B04.tif``, ``..._B8A.tif`` / ``..._VV.tif``, ``..._VH.tif``) become one item with one
  asset per band; any other file is an item of its own.
* Times: ``--datetime``, else the file's acquisition tags, else its name, else (with a note)
  ``TIFFTAG_DATETIME``; a date without a time spans its whole day. Static layers (elevation,
  land cover, OSM) without any time are given the open span 1970-01-01 .. 2099-12-31 (noted),
  so that every search window finds them; other modalities without a time are refused.
* Every file that cannot be understood is reported, all in one error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eo_fusion.catalogs.build.infer import AUX_TOKEN, Inference, infer_raster
from eo_fusion.catalogs.build.items import RASTER_SUFFIXES
from eo_fusion.catalogs.build.las import LAS_SUFFIXES
from eo_fusion.catalogs.build.osm import is_osm_extract, osm_header
from eo_fusion.catalogs.build.raster import read_raster
from eo_fusion.catalogs.build.specs import AssetSpec, ItemSpec
from eo_fusion.catalogs.build.times import When, file_written_time, time_in_name, time_in_tags
from eo_fusion.errors import BadInputError
from eo_fusion.modalities import get_modality

log = logging.getLogger(__name__)

_STATIC_FAMILIES = frozenset({"elevation", "labels", "osm"})
_STATIC_SPAN = When(
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC),
    "no time (static layer)",
)
_MAX_LISTED = 12


@dataclass(frozen=True)
class BuildOptions:
    """Explicit ``catalog build`` options (``None``: infer from the files).

    ``band_keys`` are registry keys already (``None`` entries: unplaced bands); ``crs`` is the
    CRS text for files that declare none.
    """

    modality: str | None = None
    when: When | None = None
    band_keys: tuple[str | None, ...] | None = None
    units: str | None = None
    crs: str | None = None


@dataclass(frozen=True)
class BuildPlan:
    """Item specs of a build, the notes to show the user, and the files left out."""

    specs: tuple[ItemSpec, ...]
    notes: tuple[str, ...] = ()
    ignored: tuple[Path, ...] = ()


@dataclass
class _File:
    path: Path
    inference: Inference
    when: When | None
    notes: list[str] = field(default_factory=list)
    res: float = float("inf")  # ground resolution (m) of a raster


def _is_input(path: Path) -> bool:
    s = path.suffix.lower()
    return s in RASTER_SUFFIXES or s in LAS_SUFFIXES or is_osm_extract(path)


def collect_files(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(input files, ignored files) under ``paths``; a named file must be an input type."""
    files: list[Path] = []
    ignored: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                (files if _is_input(f) else ignored).append(f)
        elif not p.exists():
            raise BadInputError(f"{p}: no such file or folder", fix="check the path")
        elif _is_input(p):
            files.append(p)
        else:
            raise BadInputError(
                f"{p}: not a file type catalog build reads",
                fix="give GeoTIFF/COG, JPEG/PNG with a world file, JPEG 2000, LAS/LAZ, or an "
                "OSM extract (.osm.pbf, .osm, .osm.bz2, .osm.gz)",
            )
    return files, ignored


def _fixed_kind(path: Path, kind: str, opts: BuildOptions) -> Inference:
    """Inference for LAS (lidar) and OSM files: options may only confirm the modality."""
    if opts.modality and opts.modality != kind:
        raise BadInputError(
            f"{path}: --modality {opts.modality} given, but the file is {kind} data",
            fix="build it separately, without --modality, or with --modality " + kind,
        )
    if opts.band_keys is not None or opts.units:
        raise BadInputError(
            f"{path}: --bands/--units apply to rasters, not to {kind} files",
            fix="build rasters and other files in separate commands",
        )
    key = "pointcloud" if kind == "lidar" else "pbf" if path.name.endswith(".pbf") else "osm"
    return Inference(modality=kind, band_keys=(), group=_stem(path), asset_key=key)


def _stem(path: Path) -> str:
    return path.stem  # monaco.osm.pbf -> monaco.osm (the id the builder always gave)


def _read_file(path: Path, opts: BuildOptions) -> _File:
    notes: list[str] = []
    tags: dict[str, str] = {}
    when = None
    res = float("inf")
    if path.suffix.lower() in LAS_SUFFIXES:
        inf = _fixed_kind(path, "lidar", opts)
    elif is_osm_extract(path):
        inf = _fixed_kind(path, "osm", opts)
        stamp = osm_header(path)[1]
        when = When(stamp, stamp, "replication timestamp of the extract") if stamp else None
    else:
        info = read_raster(path, opts.crs)
        tags, res = info.tags, info.res
        inf = infer_raster(
            path.stem, info, where=str(path), modality=opts.modality,
            band_keys=opts.band_keys, units=opts.units,
        )  # fmt: skip
        notes += inf.notes
    if opts.when is not None:
        when = opts.when
    else:
        when = (
            time_in_tags(tags, str(path), notes)
            or when
            or time_in_name(path.name, notes)
            or time_in_name(path.parent.name, notes)  # Earth Search downloads: <item id>/red.tif
            or file_written_time(tags, str(path), notes)
        )
    return _File(path, inf, when, notes, res)


def _groups(files: Sequence[_File]) -> list[list[_File]]:
    """Per-band files of one acquisition together (see module doc); else one file each."""
    out: dict[tuple[Any, ...], list[_File]] = {}
    for f in files:
        inf = f.inference
        if inf.asset_key in ("data", "pointcloud", "pbf", "osm"):
            key: tuple[Any, ...] = ("file", f.path)
        else:
            # SAFE keeps the resolutions of one granule in sibling folders R10m/R20m/R60m
            folder = f.path.parent
            if re.fullmatch(r"R\d+m", folder.name):
                folder = folder.parent
            key = ("bands", folder, inf.group or folder.name, inf.modality)
        out.setdefault(key, []).append(f)
    return list(out.values())


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "item"


def _item_time(group: Sequence[_File], item_id: str, notes: list[str]) -> When:
    whens = {(f.when.start, f.when.end) for f in group if f.when is not None}
    first = next((f.when for f in group if f.when is not None), None)
    if len(whens) > 1 and first is not None:
        notes.append(f"item {item_id}: its files give different times; using {first.source}")
    if first is not None:
        return first
    family = get_modality(group[0].inference.modality).family
    if family in _STATIC_FAMILIES:
        notes.append(
            f"item {item_id}: no acquisition time in the file, its tags or its name: a static "
            "layer, valid 1970-01-01 .. 2099-12-31 (pass --datetime to set it)"
        )
        return _STATIC_SPAN
    seen = "".join(f"; {n}" for f in group for n in f.notes if "time" in n or "date" in n)
    raise BadInputError(
        f"{group[0].path}: no acquisition time in its tags or its name{seen}",
        fix="pass --datetime (e.g. 2021-06-01 or 2021-06-01T10:30:00Z)",
    )


def _spec(group: Sequence[_File], item_id: str, opts: BuildOptions, notes: list[str]) -> ItemSpec:
    keys_seen: dict[tuple[str | None, ...], Path] = {}
    assets = []
    props: dict[str, Any] = {}
    # Finest first: a band delivered at several resolutions (SAFE L2A: B04 at 10, 20, 60 m)
    # keeps its finest file; the others are noted.
    for f in sorted(group, key=lambda f: (f.res, f.inference.asset_key)):
        inf = f.inference
        if inf.band_keys in keys_seen:
            notes.append(f"{f.path}: {', '.join(map(str, inf.band_keys))} also in the finer "
                         f"{keys_seen[inf.band_keys].name}: left out")  # fmt: skip
            continue
        keys_seen[inf.band_keys] = f.path
        props.update(inf.properties)
        keys = inf.band_keys if inf.band_keys else None
        assets.append(AssetSpec(
            key=inf.asset_key, path=f.path, band_keys=keys, units=inf.units, scale=inf.scale,
            offset=inf.offset, nodata=inf.nodata,
        ))  # fmt: skip
    when = _item_time(group, item_id, notes)
    return ItemSpec(
        id=item_id, modality=group[0].inference.modality, assets=tuple(assets),
        datetime=when.instant, start=None if when.instant else when.start,
        end=None if when.instant else when.end, properties=props, crs=opts.crs,
    )  # fmt: skip


def _ids(groups: Sequence[Sequence[_File]]) -> list[str]:
    """Item ids: the acquisition name; made unique with the folder name, then a number."""
    base = [_safe_id(g[0].inference.group or g[0].path.parent.name) for g in groups]
    ids = [
        _safe_id(f"{g[0].path.parent.name}-{b}") if base.count(b) > 1 else b
        for g, b in zip(groups, base, strict=True)
    ]
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        out.append(i if ids.count(i) == 1 else f"{i}-{seen[i]}")
    return out


def plan_build(paths: Iterable[Path], opts: BuildOptions | None = None) -> BuildPlan:
    """Item specs for the files under ``paths`` (see module doc).

    Raises:
        BadInputError: no input files, or files that cannot be understood (all listed).
    """
    opts = opts or BuildOptions()
    files, ignored = collect_files(paths)
    if not files:
        raise BadInputError(
            "no input files found (GeoTIFF, JPEG/PNG + world file, JPEG 2000, LAS/LAZ, OSM)",
            fix="check the paths given to catalog build",
        )
    read: list[_File] = []
    problems: list[str] = []
    for path in files:
        if opts.band_keys is None and opts.modality is None and AUX_TOKEN.search(path.stem):
            ignored.append(path)  # AOT, WVP, TCI, previews: not bands
            continue
        try:
            read.append(_read_file(path, opts))
        except BadInputError as e:
            problems.append(str(e))
    groups = _groups(read)
    notes = [n for f in read for n in f.notes]
    specs = []
    for group, item_id in zip(groups, _ids(groups), strict=True):
        try:
            specs.append(_spec(group, item_id, opts, notes))
        except BadInputError as e:
            problems.append(str(e))
    if problems:
        _refuse(problems)
    return BuildPlan(tuple(specs), tuple(notes), tuple(ignored))


def _refuse(problems: Sequence[str]) -> None:
    shown = problems[:_MAX_LISTED]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise BadInputError(
        f"{len(problems)} input(s) cannot be catalogued:\n  " + "\n  ".join(shown) + more,
        fix="follow the fix of each (or build the other files without them)",
    )


def specs_from_paths(
    paths: Iterable[Path],
    *,
    modality: str | None = None,
    when: datetime | None = None,
    band_keys: Sequence[str | None] | None = None,
    units: str | None = None,
    crs: str | None = None,
) -> list[ItemSpec]:
    """:func:`plan_build` with plain options (``band_keys``: registry keys, ``-`` unplaced);
    the plan's notes are logged as warnings."""
    from eo_fusion.catalogs.build.infer import resolve_band_option

    keys = tuple(resolve_band_option(k or "-") for k in band_keys) if band_keys else None
    w = When(when, when, "datetime option") if when else None
    plan = plan_build(paths, BuildOptions(modality, w, keys, units, crs))
    for note in plan.notes:
        log.warning(note)
    return list(plan.specs)
