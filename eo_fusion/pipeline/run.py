"""``run_job``: search → plan tiles → per-tile stack + predict on dask → COG + STAC + QA report.

Run folder layout (``<output.dir>/<run-id>/``)::

    manifest.json            tile states, inputs, outputs, sha256, errors; provenance
    .lock                    present while a process writes the run
    tiles/r000_c000.tif      per-tile products (core only, halo cropped)
    <job>_classes.tif        COG, uint8 classes (+ .aux.xml raster attribute table)
    <job>_confidence.tif     COG, max probability in percent
    <job>_probabilities.tif  COG, per-class probability in percent (on request)
    quicklook.png            class map with legend
    report.json, report.md   QA report
    stac/collection.json     Collection of the run; stac/<item>/<item>.json per product

The run id is ``<job name>-<hash>`` of the job config and the resolved time window, so rerunning
the same job resumes the same run, while a changed job (or another run date of a ``last_days``
job) writes a new one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

from odc.geo import Geometry
from odc.geo.geobox import GeoBox

from eo_fusion import __version__
from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import PROJECT_ROOT, AOISpec, JobSpec, spec_hash, window_text
from eo_fusion.errors import JobError
from eo_fusion.files import sha256_file
from eo_fusion.grid import aoi_geometry, grid_from_aoi, make_tiles
from eo_fusion.logs import get_logger
from eo_fusion.pipeline.execute import Predictor, TileOutcome, dask_client, execute_tasks
from eo_fusion.pipeline.manifest import RunManifest, TileRecord, run_lock, utc_now
from eo_fusion.pipeline.mosaic import layers_for, mosaic_to_gtiff
from eo_fusion.pipeline.plan import (
    TileTask,
    describe_plan,
    grid_crs,
    plan_tasks,
    run_hash,
    run_id_for,
)
from eo_fusion.pipeline.products import write_cog
from eo_fusion.pipeline.progress import ProgressHook
from eo_fusion.pipeline.report import (
    class_stats,
    class_table,
    pixel_area_ha,
    write_quicklook,
    write_report,
)
from eo_fusion.pipeline.stac_products import (
    ProductFile,
    build_collection,
    build_items,
    save_collection,
    validate_stac_files,
)

log = get_logger(__name__)

#: Minimum seconds between manifest rewrites while tiles finish.
MANIFEST_SAVE_S = 1.0


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        run_id: the run folder's name.
        run_dir: the run folder.
        tiles_total: tiles in the plan.
        tiles_done: tiles with a verified output (computed now or reused).
        tiles_reused: tiles skipped because an earlier attempt's output verified.
        tiles_failed: tiles that failed after retries.
        failures: the failed tiles' outcomes.
        products: product name -> file.
        stac: STAC JSON files written.
        report: the Markdown report (``None`` if not written).
        seconds: wall time.
    """

    run_id: str
    run_dir: Path
    tiles_total: int = 0
    tiles_done: int = 0
    tiles_reused: int = 0
    tiles_failed: int = 0
    failures: list[TileOutcome] = field(default_factory=list)
    products: dict[str, Path] = field(default_factory=dict)
    stac: list[Path] = field(default_factory=list)
    report: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every tile succeeded and the products were written."""
        return self.tiles_failed == 0 and "classes" in self.products


def aoi_of(spec: AOISpec) -> Geometry:
    """The job's AOI as an odc-geo Geometry (in the AOI's own CRS)."""
    if spec.bbox is not None:
        return aoi_geometry(tuple(spec.bbox), spec.crs)
    if spec.geojson is not None:
        return aoi_geometry(Path(spec.geojson), spec.crs)
    return aoi_geometry(str(spec.wkt), spec.crs)


def search_inputs(
    job: JobSpec,
    aoi: Geometry,
    window: tuple[date | None, date | None],
    *,
    require: bool = False,
) -> dict[str, list[NormalizedItem]]:
    """Search the job's catalog for every modality over the AOI and time window.

    With ``require`` (the map job), a modality that found nothing raises one
    :class:`~eo_fusion.catalogs.search.EmptySearchError` naming every such modality and the
    likely causes (swapped coordinates, reversed dates, the cloud limit, ...).
    """
    from eo_fusion.catalogs import open_catalog
    from eo_fusion.catalogs.search import empty_search_error
    from eo_fusion.modalities import search_properties

    catalog = open_catalog(job.catalog)
    dt = window_text(window) if any(window) else None
    out: dict[str, list[NormalizedItem]] = {}
    results = {}
    for modality, spec in job.modalities.items():
        kwargs: dict[str, Any] = {"intersects": aoi.to_crs("EPSG:4326").json, "datetime": dt}
        if spec.max_cloud is not None:
            kwargs["max_cloud"] = spec.max_cloud
        if spec.collections:
            kwargs["collections"] = spec.collections
        kwargs["properties"] = search_properties(modality, spec.options)  # S1 orbit filters
        results[modality] = result = catalog.search(modality, **kwargs)
        out[modality] = list(result.normalized)
        log.info(
            "search %s: %d item(s), %d skipped", modality, len(out[modality]), len(result.skipped)
        )
    # Zero items for a modality: one error naming each such modality and its likely causes.
    who, where = (
        f"job {job.name}: the catalog {job.catalog!r}",
        f"over the AOI in {dt or 'any time'}",
    )
    if require and (err := empty_search_error(results, who, where)) is not None:
        raise err
    return out


def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if (PROJECT_ROOT / ".git").exists():
            rev = subprocess.run(
                ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            if rev:
                return f"{__version__}+g{rev}"
    return __version__


def _record(manifest: RunManifest, outcome: TileOutcome) -> None:
    rec = manifest.tiles.setdefault(outcome.tile_id, TileRecord())
    rec.inputs = outcome.inputs or rec.inputs
    rec.attempts = outcome.attempts
    rec.seconds = round(outcome.seconds, 3)
    rec.finished = utc_now()
    rec.worker = outcome.worker
    if outcome.ok:
        rec.state, rec.output, rec.sha256, rec.error = "done", outcome.output, outcome.sha256, None
    else:
        rec.state, rec.error = "failed", outcome.error


def _window_datetimes(
    window: tuple[date | None, date | None],
    items: Mapping[str, Sequence[NormalizedItem]],
    run_date: date,
) -> tuple[datetime, datetime]:
    stamps = [it.datetime for its in items.values() for it in its]
    first = (
        datetime.combine(window[0], dtime.min, UTC)
        if window[0]
        else (min(stamps) if stamps else datetime.combine(run_date, dtime.min, UTC))
    )
    last = (
        datetime.combine(window[1], dtime.max.replace(microsecond=0), UTC)
        if window[1]
        else (max(stamps) if stamps else datetime.combine(run_date, dtime.min, UTC))
    )
    return first, last


def run_job(
    job: JobSpec,
    *,
    force: bool = False,
    scheduler: Any = None,
    run_date: date | None = None,
    predictor: Predictor | None = None,
    items: Mapping[str, Sequence[NormalizedItem]] | None = None,
    workers: int | None = None,
    progress: ProgressHook | None = None,
    notes: Sequence[str] = (),
) -> RunSummary:
    """Run a mapping job end to end; resumes an earlier attempt of the same run.

    Args:
        job: the validated job.
        force: recompute every tile even if an earlier attempt's output verifies.
        scheduler: an existing cluster: scheduler address (``tcp://host:8786``), a connected
            ``distributed.Client`` or a cluster object with ``get_client()`` (Dask Gateway,
            dask-jobqueue, dask-kubernetes); overrides ``job.dask.scheduler``.
        run_date: the date a relative time window (``time.last_days``) ends on; default: today
            (UTC).
        predictor: computes tile probabilities; default: the job's model
            (:class:`~eo_fusion.pipeline.predictors.ModelPredictor`).
        items: search results per modality (skips the catalog search; for tests and notebooks).
        workers: LocalCluster workers (overrides ``job.dask.workers``).
        progress: receives progress events.
        notes: lines added to the report's notes.

    Returns:
        The run summary; ``summary.ok`` is False when any tile failed.

    Raises:
        LockError: another process is writing the same run.
        JobError: the plan is empty, or ``on_failure: stop`` and a tile failed.
    """
    t0 = time.perf_counter()
    progress = progress or ProgressHook()
    run_date = run_date or datetime.now(UTC).date()
    window = job.time.resolve(run_date)
    aoi = aoi_of(job.aoi)
    grid = grid_from_aoi(aoi, job.grid.resolution, job.grid.crs)
    tiles = make_tiles(grid, job.grid.tile_size, job.grid.halo)
    if predictor is None:
        from eo_fusion.pipeline.predictors import ModelPredictor

        pred: Predictor = ModelPredictor.from_ref(job.model)
    else:
        pred = predictor
    if items is None:
        progress.phase("search")
        items = search_inputs(job, aoi, window, require=True)
        empty = [m for m in job.modalities if not items.get(m)]
        if empty:  # every tile would fail the same way: say so once, before starting a cluster
            raise JobError(
                f"job {job.name}: the catalog {job.catalog!r} has no items for "
                f"{', '.join(empty)} over the AOI in {window_text(window)}",
                fix="check the time window (and --run-date for last_days), the AOI and max_cloud",
            )
    dspec = job.dask if workers is None else job.dask.model_copy(update={"workers": workers})
    tasks = plan_tasks(job, tiles, items, aoi, threads=1)
    if not tasks:
        raise JobError(
            f"job {job.name}: no tile of the {grid.shape.x}×{grid.shape.y} px grid touches the AOI",
            fix="check the AOI and its CRS",
        )
    log.info("plan: %s", describe_plan(tasks))

    config_hash = spec_hash(job)
    run_id = run_id_for(job, window, config_hash=config_hash)
    run_dir = Path(job.output.dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(run_id=run_id, run_dir=run_dir, tiles_total=len(tasks))
    with run_lock(run_dir):
        manifest = RunManifest.load(run_dir) or RunManifest(
            run_id=run_id,
            job_name=job.name,
            config_hash=config_hash,
            run_hash=run_hash(job, window, config_hash=config_hash),
        )
        if manifest.config_hash != config_hash:  # same folder name, different job: refuse
            raise JobError(
                f"run folder {run_dir} belongs to a different job config",
                fix="rename the job or remove that folder",
            )
        todo = _tiles_to_run(tasks, manifest, run_dir, force)
        summary.tiles_reused = len(tasks) - len(todo)
        manifest.provenance = _provenance(config_hash, tasks, pred, window, run_date)
        manifest.save(run_dir)
        log.info(
            "run %s: %d tile(s), %d to compute, %d reused",
            run_id,
            len(tasks),
            len(todo),
            summary.tiles_reused,
        )
        progress.start(len(tasks), summary.tiles_reused)
        progress.phase("tiles")
        outcomes: list[TileOutcome] = []
        if todo:
            last_save = [time.monotonic()]

            def on_outcome(outcome: TileOutcome) -> None:
                _record(manifest, outcome)
                # Rewriting the manifest after every tile is O(tiles²) on big jobs: save at most
                # once a second (a tile finished since then is recomputed after a crash).
                if not outcome.ok or time.monotonic() - last_save[0] >= MANIFEST_SAVE_S:
                    manifest.save(run_dir)
                    last_save[0] = time.monotonic()
                progress.tile_done(outcome)
                if not outcome.ok:
                    log.warning("tile %s failed: %s", outcome.tile_id, outcome.error)

            with dask_client(dspec, scheduler) as client:
                progress.phase("compute")  # the cluster is up; tiles are being submitted
                outcomes = execute_tasks(
                    client,
                    todo,
                    pred,
                    run_dir,
                    wave_size=dspec.wave_size,
                    retries=job.retries,
                    on_failure=job.on_failure,
                    on_outcome=on_outcome,
                )
        manifest.save(run_dir)
        summary.failures = [o for o in outcomes if not o.ok]
        summary.tiles_failed = len(summary.failures)
        summary.tiles_done = sum(1 for t in tasks if manifest.tiles[t.tile_id].state == "done")
        if summary.tiles_failed and job.on_failure == "stop":
            summary.seconds = time.perf_counter() - t0
            return summary
        progress.phase("products")
        _assemble(
            job,
            config_hash,
            grid,
            tiles,
            tasks,
            manifest,
            run_dir,
            pred,
            summary,
            window,
            items,
            run_date,
            list(notes),
        )
        manifest.products = {
            k: str(Path(p).relative_to(run_dir)) for k, p in summary.products.items()
        }
        manifest.save(run_dir)
    summary.seconds = time.perf_counter() - t0
    return summary


def _tiles_to_run(
    tasks: Sequence[TileTask], manifest: RunManifest, run_dir: Path, force: bool
) -> list[TileTask]:
    todo = []
    for t in tasks:
        if not force and manifest.verified(t.tile_id, run_dir):
            continue
        manifest.tiles[t.tile_id] = TileRecord(state="pending", inputs=t.input_ids())
        todo.append(t)
    return todo


def _provenance(
    config_hash: str,
    tasks: Sequence[TileTask],
    predictor: Predictor,
    window: tuple[date | None, date | None],
    run_date: date,
) -> dict[str, Any]:
    inputs: dict[str, set[str]] = {}
    for t in tasks:
        for m, ids in t.input_ids().items():
            inputs.setdefault(m, set()).update(ids)
    return {
        "input_items": {m: sorted(ids) for m, ids in sorted(inputs.items())},
        **predictor.provenance(),
        "code_version": code_version(),
        "job_config_hash": config_hash,
        "run_date": run_date.isoformat(),
        "time_window": [d.isoformat() if d else None for d in window],
    }


def _cog_blocksize(requested: int, grid: GeoBox) -> int:
    """Halve the COG block size for small grids so that they still get an overview level."""
    size = requested
    while size >= 128 and max(grid.shape.yx) <= size:
        size //= 2
    return size


def _assemble(
    job: JobSpec,
    config_hash: str,
    grid: GeoBox,
    tiles: Sequence[Any],
    tasks: Sequence[TileTask],
    manifest: RunManifest,
    run_dir: Path,
    predictor: Predictor,
    summary: RunSummary,
    window: tuple[date | None, date | None],
    items: Mapping[str, Sequence[NormalizedItem]],
    run_date: date,
    notes: list[str],
) -> None:
    classes = predictor.classes
    windows = []
    for tile in tiles:
        rec = manifest.tiles.get(tile.id)
        path = run_dir / rec.output if rec and rec.state == "done" and rec.output else None
        windows.append((tile.core_in_grid, path))
    tags = {
        "EO_FUSION_JOB": job.name,
        "EO_FUSION_RUN_ID": summary.run_id,
        "EO_FUSION_CONFIG_HASH": config_hash,
        "EO_FUSION_VERSION": __version__,
    }
    blocksize = _cog_blocksize(job.output.blocksize, grid)
    for layer in layers_for(job.output.confidence, job.output.probabilities, len(classes)):
        dst = run_dir / f"{job.name}_{layer.name}.tif"
        tmp = run_dir / f".{job.name}_{layer.name}.mosaic.tif"
        try:
            mosaic_to_gtiff(tmp, grid, windows, layer, blocksize=blocksize)
            write_cog(
                tmp,
                dst,
                kind=layer.name,
                classes=classes,
                blocksize=blocksize,
                tags=tags,
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        summary.products[layer.name] = dst
    # Hashed once, for both the STAC file:checksum and the report. write_cog has validated each
    # COG (rio-cogeo, strict) before publishing it, so no second validation here.
    sha256s = {name: sha256_file(p) for name, p in summary.products.items()}
    classes_cog = summary.products["classes"]
    quicklook = run_dir / "quicklook.png" if job.output.report else None
    if quicklook is not None:
        write_quicklook(classes_cog, quicklook, classes, f"{job.name} ({summary.run_id})")
    aoi = tasks[0].aoi.to_crs(grid_crs(grid))  # the plan's AOI, already in the grid CRS
    footprint = aoi.intersection(grid.extent)
    extra: dict[str, tuple[Path, str, tuple[str, ...], str]] = {
        "rat": (
            Path(f"{classes_cog}.aux.xml"),
            "application/xml",
            ("metadata",),
            "GDAL raster attribute table (PAM)",
        )
    }
    if quicklook is not None:
        extra["thumbnail"] = (
            quicklook,
            "image/png",
            ("thumbnail", "overview"),
            "quicklook with legend",
        )
    products = [
        ProductFile(kind=k, path=p, extra_assets=extra if k == "classes" else {}, sha256=sha256s[k])
        for k, p in summary.products.items()
    ]
    stac_items = build_items(
        products,
        run_id=summary.run_id,
        grid=grid,
        footprint=footprint,
        window=_window_datetimes(window, items, run_date),
        classes=classes,
        provenance=manifest.provenance,
        base_dir=run_dir,
    )
    collection = build_collection(
        stac_items,
        run_id=summary.run_id,
        description=job.description or f"eo-fusion map products of job {job.name}",
    )
    summary.stac = save_collection(collection, run_dir / "stac")
    validate_stac_files(summary.stac)
    if not job.output.report:
        return
    summary.report = _write_qa(
        job,
        config_hash,
        grid,
        tasks,
        manifest,
        run_dir,
        summary,
        sha256s,
        quicklook,
        notes,
        classes,
    )


def _write_qa(
    job: JobSpec,
    config_hash: str,
    grid: GeoBox,
    tasks: Sequence[TileTask],
    manifest: RunManifest,
    run_dir: Path,
    summary: RunSummary,
    sha256s: Mapping[str, str],
    quicklook: Path | None,
    notes: list[str],
    classes: Sequence[Any],
) -> Path:
    counts, conf = class_stats(summary.products["classes"], summary.products.get("confidence"))
    ha = pixel_area_ha(grid)
    h, w = grid.shape.yx
    crs = grid_crs(grid)
    failed = [
        {"tile": tid, "attempts": rec.attempts, "error": rec.error}
        for tid, rec in sorted(manifest.tiles.items())
        if rec.state == "failed"
    ]
    report = {
        "job": {"name": job.name, "description": job.description, "config_hash": config_hash},
        "run_id": summary.run_id,
        "run_date": manifest.provenance.get("run_date"),
        "finished": utc_now(),
        "time_window": manifest.provenance.get("time_window"),
        "grid": {
            "crs": f"EPSG:{crs.epsg}" if crs.epsg else crs.to_wkt(),
            "shape": [h, w],
            "resolution": abs(float(grid.resolution.x)),
            "units": (crs.units[0] if crs.units else ""),
            "transform": list(grid.transform)[:6],
            "area_km2": round(h * w * ha / 100.0, 4) if ha is not None else None,
            "tile_size": job.grid.tile_size,
            "halo": job.grid.halo,
        },
        "tiles": {
            "total": len(tasks),
            "done": summary.tiles_done,
            "reused": summary.tiles_reused,
            "failed": len(failed),
        },
        "classes": class_table(counts, classes, grid, conf),
        "nodata_pixels": int(counts[255]),
        "failures": failed,
        "products": {Path(p).name: sha256s[k] for k, p in summary.products.items()},
        "validation": {
            "cog": "passed",  # at write time: write_cog publishes only COGs that validate
            "stac": f"passed ({len(summary.stac)} documents)",
        },
        "provenance": manifest.provenance,
        "notes": [*notes, *_auto_notes(job, grid, manifest, ha)],
    }
    return write_report(run_dir, report, quicklook)


def _auto_notes(job: JobSpec, grid: GeoBox, manifest: RunManifest, ha: float | None) -> list[str]:
    prov = manifest.provenance
    notes = []
    for modality, ids in prov.get("input_items", {}).items():
        shown = ", ".join(ids[:8]) + (f" … (+{len(ids) - 8})" if len(ids) > 8 else "")
        notes.append(f"Inputs {modality}: {len(ids)} item(s): {shown}")
    if prov.get("model_card_sha256"):
        notes.append(
            f"Model card sha256 {prov['model_card_sha256']}, task {prov.get('model_task')}"
        )
    notes.append(
        f"Tiles of {job.grid.tile_size} px with a {job.grid.halo} px halo (predicted on tile + "
        "halo, halo cropped). The grid is snapped outward to whole multiples of the resolution; "
        "pixels whose centre lies outside the AOI are nodata."
    )
    if ha is not None:
        notes.append(
            f"Areas are pixel counts × {ha * 10_000:g} m² (1 ha = 10,000 m²); mean confidence "
            "is the mean of the per-pixel maximum class probability."
        )
    notes.append(
        f"Code version {prov.get('code_version')}, job config sha256 {prov.get('job_config_hash')}"
    )
    return notes
