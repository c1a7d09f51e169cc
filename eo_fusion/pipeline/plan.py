"""Planning a mapping run: from (job, run date, items) to one frozen :class:`RunPlan`.

A run is *plan → execute → assemble*. Planning is the only stage that reads the
:class:`~eo_fusion.config.JobSpec`: :func:`plan_run` resolves the time window, the AOI, the grid
and its tiles, the tile tasks, the run id and the hashes, and everything after it (execution,
manifest, products, report) works from the plan alone.

Nothing here reads pixels, opens files (except an AOI GeoJSON) or talks to a scheduler: a plan can
be built, inspected and tested without data. Each :class:`TileTask` carries everything a worker
needs (its :class:`~eo_fusion.grid.Tile`, the items that intersect it, modality options, output and
GDAL options), so tasks are self-contained when pickled to dask workers on other hosts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any, Literal

import shapely
import shapely.geometry
from odc.geo import Geometry
from odc.geo.geobox import GeoBox

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.catalogs.safety import URLPolicy
from eo_fusion.config import AOISpec, DaskSpec, JobSpec, ModalitySpec, ModelRef, spec_hash
from eo_fusion.errors import JobError
from eo_fusion.gdal import GDALOptions
from eo_fusion.grid import Tile, aoi_geometry, grid_crs, grid_from_aoi, make_tiles
from eo_fusion.pipeline.fingerprint import (
    Head,
    InputPrints,
    code_version,
    digest,
    input_prints,
)

Window = tuple[date | None, date | None]


@dataclass(frozen=True)
class OutputOptions:
    """What a worker writes for each tile (from ``OutputSpec``; picklable, no paths)."""

    confidence: bool = True
    probabilities: bool = False


@dataclass(frozen=True)
class TileTask:
    """Everything needed to compute one tile, as a picklable value.

    Attributes:
        tile: the tile (core, padded = core + halo, and their windows; see ``eo_fusion.grid``).
        items: modality -> items whose footprint intersects ``tile.padded`` (time-sorted).
        modalities: modality -> its options from the job.
        model: which model and head to run.
        aoi: the AOI geometry in the grid CRS (pixels whose centre is outside get nodata).
        output: what to write besides the class map.
        gdal: GDAL settings applied inside the worker around every read.
        threads: compute threads the tile may use (torch intra-op threads).
        fingerprint: sha256 of everything the tile reads (AOI, items and assets, model, code;
            see :mod:`eo_fusion.pipeline.fingerprint`); a resume reuses the tile's output only
            when it matches the recorded one.
    """

    tile: Tile
    items: Mapping[str, tuple[NormalizedItem, ...]]
    modalities: Mapping[str, ModalitySpec]
    model: ModelRef
    aoi: Geometry
    output: OutputOptions = field(default_factory=OutputOptions)
    gdal: GDALOptions = field(default_factory=GDALOptions)
    threads: int = 1
    fingerprint: str = ""

    @property
    def tile_id(self) -> str:
        """``r{row:03d}_c{col:03d}`` (the tile's id)."""
        return self.tile.id

    @property
    def output_relpath(self) -> str:
        """The tile's output file relative to the run folder."""
        return f"tiles/{self.tile.id}.tif"

    def input_ids(self) -> dict[str, list[str]]:
        """modality -> ids of the items this tile reads (recorded in the manifest)."""
        return {m: [it.id for it in items] for m, items in self.items.items()}


@dataclass(frozen=True)
class JobArea:
    """Where and when a job maps, from the job alone (the same for map, stack and the API).

    Attributes:
        aoi: the AOI in its own CRS.
        window: (first day, last day) of the time window, inclusive; ``None`` = open.
        grid: the job grid (snapped outward to whole multiples of the resolution).
        tiles: every tile of the grid, row-major (cores partition the grid exactly once).
    """

    aoi: Geometry
    window: Window
    grid: GeoBox
    tiles: tuple[Tile, ...]


@dataclass(frozen=True)
class RunPlan:
    """One run of a job, resolved: the single value that execution and assembly work from.

    Attributes:
        job_name: the job's name (product file names, tags, logs).
        description: what the job maps (STAC collection, report).
        run_id: ``<job name>-<12 hex of run_hash>``; names the run folder.
        run_dir: ``<output.dir>/<run_id>``.
        config_hash: sha256 of the job config (``eo_fusion.config.spec_hash``).
        run_hash: sha256 of the config hash and the resolved window.
        run_date: the date a relative window (``last_days``) ends on.
        window: the resolved time window (first day, last day; ``None`` = open).
        time_range: (start, end) UTC of the products' STAC datetime range: the window's days,
            an open end taken from the inputs' acquisition times (else the run date).
        aoi: the AOI in the grid CRS.
        footprint: ``aoi`` clipped to the grid extent (grid CRS): the products' footprint.
        grid: the job grid.
        tile_size, halo: tile edge and halo in pixels.
        tiles: every tile of the grid (the mosaic needs them all; those without a task are nodata).
        tasks: one task per tile that touches the AOI.
        inputs: modality -> sorted ids of every item some task reads.
        model: the job's model reference (builds the default predictor).
        output: what each tile writes besides classes.
        blocksize: internal COG block edge in pixels.
        report: whether to write the QA report and quicklook.
        dask: where tiles run (LocalCluster sizing or a scheduler address).
        retries: per-tile retries for transient errors.
        on_failure: ``stop`` at the first failed tile or ``continue`` with the others.
        prints: fingerprints of the AOI, every item read, the model and the code.
        tile_parts: tile id -> its fingerprint components (``InputPrints.tile_parts``).
        search: modality -> what the search did (``items``, ``pages``, ``truncated``).
        skipped_items: modality -> item id -> why no tile reads it.
        strict: input problems (truncated search, skipped items, dates without clear pixels,
            partial inputs, nodata that disagrees with the data) fail the run.
    """

    job_name: str
    description: str
    run_id: str
    run_dir: Path
    config_hash: str
    run_hash: str
    run_date: date
    window: Window
    time_range: tuple[datetime, datetime]
    aoi: Geometry
    footprint: Geometry
    grid: GeoBox
    tile_size: int
    halo: int
    tiles: tuple[Tile, ...]
    tasks: tuple[TileTask, ...]
    inputs: Mapping[str, tuple[str, ...]]
    model: ModelRef
    output: OutputOptions
    blocksize: int
    report: bool
    dask: DaskSpec
    retries: int
    on_failure: Literal["stop", "continue"]
    prints: InputPrints | None = None
    tile_parts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    search: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    skipped_items: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    strict: bool = False


def job_aoi(spec: AOISpec) -> Geometry:
    """The job's AOI as an odc-geo Geometry (in the AOI's own CRS)."""
    if spec.bbox is not None:
        return aoi_geometry(tuple(spec.bbox), spec.crs)
    if spec.geojson is not None:
        return aoi_geometry(Path(spec.geojson), spec.crs)
    return aoi_geometry(str(spec.wkt), spec.crs)


def input_crs(items: Mapping[str, Sequence[NormalizedItem]] | None) -> list[str]:
    """The declared CRS of every band of ``items`` (for ``crs: auto``); empty when any band
    does not declare one (then nothing is known to be shared)."""
    crss = [a.crs for its in (items or {}).values() for it in its for a in it.bands.values()]
    return [c for c in crss if c] if crss and all(crss) else []


def job_area(
    job: JobSpec, run_date: date, items: Mapping[str, Sequence[NormalizedItem]] | None = None
) -> JobArea:
    """The job's AOI, resolved time window, grid and tiles on ``run_date``; with ``items``,
    ``crs: auto`` keeps their CRS when they all share one (:func:`eo_fusion.grid.auto_crs`)."""
    aoi = job_aoi(job.aoi)
    grid = grid_from_aoi(aoi, job.grid.resolution, job.grid.crs, input_crs=input_crs(items))
    tiles = make_tiles(grid, job.grid.tile_size, job.grid.halo)
    return JobArea(aoi=aoi, window=job.time.resolve(run_date), grid=grid, tiles=tuple(tiles))


def run_hash(job: JobSpec, window: Window, *, config_hash: str | None = None) -> str:
    """sha256 naming a run: the job config hash plus the resolved time window.

    A relative window (``last_days``) resolves to different dates on different run dates, and
    each of those is a different run; the same job on the same run date is the same run.
    ``config_hash`` is ``spec_hash(job)`` when the caller has it already.
    """
    payload = json.dumps(
        {
            "config": config_hash or spec_hash(job),
            "window": [d.isoformat() if d else None for d in window],
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def run_id_for(job: JobSpec, window: Window, *, config_hash: str | None = None) -> str:
    """Run folder name: ``<job name>-<12 hex of the run hash>`` (stable across reruns)."""
    return f"{job.name}-{run_hash(job, window, config_hash=config_hash)[:12]}"


def _intersects(item: NormalizedItem, footprint_ll: shapely.Geometry) -> bool:
    geom = item.geometry or shapely.geometry.mapping(shapely.geometry.box(*item.bbox))
    try:
        return bool(shapely.geometry.shape(geom).intersects(footprint_ll))
    except (ValueError, TypeError, AttributeError):  # unusable geometry: fall back to the bbox
        return bool(shapely.geometry.box(*item.bbox).intersects(footprint_ll))


def items_for_tile(
    padded: GeoBox, items_by_modality: Mapping[str, Sequence[NormalizedItem]]
) -> dict[str, tuple[NormalizedItem, ...]]:
    """The items of each modality whose footprint (EPSG:4326) intersects the padded tile."""
    footprint = padded.extent.to_crs("EPSG:4326").geom
    out: dict[str, tuple[NormalizedItem, ...]] = {}
    for modality, items in items_by_modality.items():
        hits = [it for it in items if _intersects(it, footprint)]
        out[modality] = tuple(sorted(hits, key=lambda it: (it.datetime, it.id)))
    return out


def plan_tasks(
    job: JobSpec,
    tiles: Sequence[Tile],
    items_by_modality: Mapping[str, Sequence[NormalizedItem]],
    aoi: Geometry,
    *,
    gdal: GDALOptions | None = None,
    threads: int = 1,
) -> list[TileTask]:
    """One :class:`TileTask` per tile whose core touches the AOI.

    Tiles entirely outside the AOI are left out (their pixels stay nodata in the products).

    Args:
        job: the validated job.
        tiles: the job grid's tiles (``eo_fusion.grid.make_tiles``).
        items_by_modality: search results per modality.
        aoi: AOI geometry (any CRS; converted to the grid CRS here).
        gdal: GDAL settings for the workers' reads.
        threads: compute threads per tile (torch intra-op threads on the worker).
    """
    if not tiles:
        return []
    aoi_grid = aoi.to_crs(grid_crs(tiles[0].core))
    out_opts = OutputOptions(
        confidence=job.output.confidence, probabilities=job.output.probabilities
    )
    return [
        TileTask(
            tile=tile,
            items=items_for_tile(tile.padded, items_by_modality),
            modalities=dict(job.modalities),
            model=job.model,
            aoi=aoi_grid,
            output=out_opts,
            gdal=gdal or GDALOptions(),
            threads=threads,
        )
        for tile in tiles
        if tile.core.extent.geom.intersects(aoi_grid.geom)
    ]


def submission_order(tasks: Sequence[TileTask]) -> list[TileTask]:
    """``tasks`` row by row, each row's even columns before its odd ones.

    Why: tiles that run at the same time in one process are then never side by side, so each
    tile finds the windows it shares with its left, right and upper neighbours already run
    (:mod:`eo_fusion.models.shared_windows`) instead of running them at the same time.
    """
    return sorted(tasks, key=lambda t: (t.tile.row, t.tile.col % 2, t.tile.col))


def _time_range(
    window: Window, items: Mapping[str, Sequence[NormalizedItem]], run_date: date
) -> tuple[datetime, datetime]:
    """STAC (start, end): the window's first/last day; an open end from the inputs' times."""
    stamps = [it.datetime for its in items.values() for it in its]
    fallback = datetime.combine(run_date, dtime.min, UTC)
    first = (
        datetime.combine(window[0], dtime.min, UTC)
        if window[0]
        else (min(stamps) if stamps else fallback)
    )
    last = (
        datetime.combine(window[1], dtime.max.replace(microsecond=0), UTC)
        if window[1]
        else (max(stamps) if stamps else fallback)
    )
    return first, last


def _inputs(tasks: Sequence[TileTask]) -> dict[str, tuple[str, ...]]:
    ids: dict[str, set[str]] = {}
    for t in tasks:
        for m, its in t.input_ids().items():
            ids.setdefault(m, set()).update(its)
    return {m: tuple(sorted(v)) for m, v in sorted(ids.items())}


def _skipped(
    items: Mapping[str, Sequence[NormalizedItem]], tasks: Sequence[TileTask]
) -> dict[str, dict[str, str]]:
    """modality -> item id -> why: items the search found that no tile reads."""
    read = {(m, it.id) for t in tasks for m, its in t.items.items() for it in its}
    out: dict[str, dict[str, str]] = {}
    for m, its in items.items():
        for it in its:
            if (m, it.id) not in read:
                out.setdefault(m, {})[it.id] = "its footprint touches no tile of the AOI"
    return out


def fingerprint_tasks(
    tasks: Sequence[TileTask], prints: InputPrints
) -> tuple[list[TileTask], dict[str, dict[str, Any]]]:
    """The tasks with their fingerprints set, and each tile's fingerprint components."""
    parts = {t.tile_id: prints.tile_parts(t.items) for t in tasks}
    out = [dataclasses.replace(t, fingerprint=digest(parts[t.tile_id])) for t in tasks]
    return out, parts


def _read_items(tasks: Sequence[TileTask]) -> dict[str, list[NormalizedItem]]:
    seen: dict[str, dict[str, NormalizedItem]] = {}
    for t in tasks:
        for m, its in t.items.items():
            for it in its:
                seen.setdefault(m, {}).setdefault(it.id, it)
    return {m: list(v.values()) for m, v in seen.items()}


def plan_run(
    job: JobSpec,
    run_date: date,
    items: Mapping[str, Sequence[NormalizedItem]],
    *,
    area: JobArea | None = None,
    model: Mapping[str, Any] | None = None,
    policy: URLPolicy | None = None,
    head: Head | None = None,
    search: Mapping[str, Mapping[str, Any]] | None = None,
) -> RunPlan:
    """The plan of one run of ``job`` on ``run_date`` over the searched ``items``.

    Args:
        job: the validated job (the last stage that reads it).
        run_date: the date a relative window (``time.last_days``) ends on.
        items: search results per modality (``eo_fusion.pipeline.inputs.search_job``).
        area: ``job_area(job, run_date)`` when the caller has it already (it searched with it).
        model: the predictor's provenance (model card and weights sha256), fingerprinted.
        policy: the catalog's URL policy, applied before any HEAD request for an asset;
            without one HTTP(S) assets are fingerprinted by href only (``run_job`` passes it).
        head: the HEAD request used to fingerprint HTTP(S) assets (tests replace it; default:
            one HEAD through ``policy``'s session).
        search: modality -> what the search did (``eo_fusion.pipeline.inputs.search_job``).

    Raises:
        JobError: no tile of the grid touches the AOI.
        EOFusionError: the AOI file cannot be read.
        UnsafeURLError: an asset URL is refused by ``policy``.
    """
    if area is None or (str(job.grid.crs).lower() == "auto" and input_crs(items)):
        area = job_area(job, run_date, items)  # the grid may follow the inputs' own CRS
    tasks = plan_tasks(job, area.tiles, items, area.aoi, threads=1)
    if not tasks:
        raise JobError(
            f"job {job.name}: no tile of the {area.grid.shape.x}×{area.grid.shape.y} px grid "
            "touches the AOI",
            fix="check the AOI and its CRS",
        )
    prints = input_prints(
        job.aoi, _read_items(tasks), model=model or {}, code_version=code_version(),
        policy=policy, head=head,
    )  # fmt: skip
    tasks, parts = fingerprint_tasks(tasks, prints)
    return RunPlan(
        **_identity(job, area.window),
        run_date=run_date,
        window=area.window,
        time_range=_time_range(area.window, items, run_date),
        **_geometry(job, area, tasks),
        tasks=tuple(tasks),
        inputs=_inputs(tasks),
        **_settings(job, tasks),
        prints=prints,
        tile_parts=parts,
        search=dict(search or {}),
        skipped_items=_skipped(items, tasks),
    )


def _identity(job: JobSpec, window: Window) -> dict[str, Any]:
    """Run id, folder and hashes (see :func:`run_id_for` and :func:`run_hash`)."""
    config_hash = spec_hash(job)
    run_id = run_id_for(job, window, config_hash=config_hash)
    return {
        "job_name": job.name,
        "description": job.description,
        "run_id": run_id,
        "run_dir": Path(job.output.dir) / run_id,
        "config_hash": config_hash,
        "run_hash": run_hash(job, window, config_hash=config_hash),
    }


def _geometry(job: JobSpec, area: JobArea, tasks: Sequence[TileTask]) -> dict[str, Any]:
    """AOI (grid CRS), the mapped footprint, grid and tiles."""
    aoi = tasks[0].aoi  # already in the grid CRS
    return {
        "aoi": aoi,
        "footprint": aoi.intersection(area.grid.extent),
        "grid": area.grid,
        "tile_size": job.grid.tile_size,
        "halo": job.grid.halo,
        "tiles": area.tiles,
    }


def _settings(job: JobSpec, tasks: Sequence[TileTask]) -> dict[str, Any]:
    """What execution and assembly need from the job (so they never read it)."""
    return {
        "model": job.model,
        "output": tasks[0].output,
        "blocksize": job.output.blocksize,
        "report": job.output.report,
        "dask": job.dask,
        "retries": job.retries,
        "on_failure": job.on_failure,
        "strict": job.strict,
    }


def tile_bytes(plan: RunPlan, n_classes: int) -> int:
    """Upper bound of one tile file's size in bytes (uncompressed uint8 layers of the core)."""
    layers = 1 + int(plan.output.confidence) + (n_classes if plan.output.probabilities else 0)
    return plan.tile_size * plan.tile_size * layers + 64 * 1024


def bytes_needed(plan: RunPlan, tiles: int, n_classes: int) -> int:
    """Rough upper bound of the bytes a run still writes: ``tiles`` tile files and the products
    (uncompressed layers of the grid plus a third for overviews, and the mosaic's temporary)."""
    layers = 1 + int(plan.output.confidence) + (n_classes if plan.output.probabilities else 0)
    h, w = plan.grid.shape.yx
    return tiles * tile_bytes(plan, n_classes) + int(h * w * layers * (4 / 3 + 1))


def describe_plan(tasks: Sequence[TileTask]) -> dict[str, Any]:
    """Small summary of a plan for logs: tile count, pixel counts, items per modality."""
    items = _inputs(tasks)
    return {
        "tiles": len(tasks),
        "core_pixels": sum(t.tile.core.shape.y * t.tile.core.shape.x for t in tasks),
        "padded_pixels": sum(t.tile.padded.shape.y * t.tile.padded.shape.x for t in tasks),
        "items": {m: len(ids) for m, ids in items.items()},
    }
