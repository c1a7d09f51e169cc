"""Planning a training job: labels + AOI -> grid, fields, chip plan and the items to read.

The catalog search is the map job's (:func:`eo_fusion.pipeline.inputs.search_window` on the job's
catalog, AOI, window and modalities), and chips get their items with the map job's tile rule
(:func:`eo_fusion.pipeline.plan.items_for_tile`), so a window or AOI means the same in both.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from odc.geo import Geometry
from odc.geo.geobox import GeoBox

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import AOISpec, JobSpec, portable_dump
from eo_fusion.errors import BadInputError
from eo_fusion.files import sha256_file
from eo_fusion.grid import aoi_geometry, grid_crs, grid_from_aoi
from eo_fusion.train.chips import ChipManifest, ChipRecord, ChipTask, chip_grids
from eo_fusion.train.job import TrainJobSpec
from eo_fusion.train.labels import Fields, rasterize_fields, read_fields
from eo_fusion.train.sampling import ChipPlan, sample_chips


@dataclass
class TrainPlan:
    """Everything decided before any pixel is read."""

    run_dir: Path
    store_hash: str
    grid: GeoBox
    aoi: Geometry
    window: tuple[date | None, date | None]
    fields: Fields
    field_raster: np.ndarray
    chips: list[ChipPlan]
    block_split: np.ndarray
    field_split: np.ndarray


def as_map_job(job: TrainJobSpec, aoi: Geometry) -> JobSpec:
    """The map job with this job's catalog, AOI, window and modalities (for the shared search)."""
    spec = AOISpec.model_validate({"wkt": aoi.geom.wkt, "crs": str(aoi.crs)})
    return JobSpec.model_validate(
        {
            "name": job.name,
            "catalog": job.catalog,
            "aoi": spec,
            "time": job.time,
            "modalities": job.modalities,
        }
    )


def job_aoi(job: TrainJobSpec, fields: Fields | None) -> Geometry:
    """The job's AOI, or the bounding box of the labels."""
    if job.aoi is not None:
        a = job.aoi
        if a.bbox is not None:
            return aoi_geometry(tuple(a.bbox), a.crs)
        return aoi_geometry(Path(a.geojson) if a.geojson else str(a.wkt), a.crs)
    if fields is None:
        raise BadInputError("the job has no AOI and no field labels", fix="give `aoi:`")
    minx, miny, maxx, maxy = fields.frame.total_bounds
    return aoi_geometry((minx, miny, maxx, maxy), fields.frame.crs)


def store_hash(job: TrainJobSpec, window: tuple[date | None, date | None]) -> str:
    """sha256 of what the chips depend on: data, grid, labels (and the label file's bytes),
    sampling and split; training options are left out so that they reuse the same chips."""
    dump = portable_dump(job)
    names = ("catalog", "aoi", "grid", "modalities", "labels", "scene_labels", "sampling", "split")
    keep = {k: dump[k] for k in names}
    keep["window"] = [d.isoformat() if d else None for d in window]
    if job.labels is not None:
        keep["labels_sha256"] = sha256_file(Path(job.labels.path))
        if job.labels.mapping:
            keep["mapping_sha256"] = sha256_file(Path(job.labels.mapping))
    payload = json.dumps(keep, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def plan_training(job: TrainJobSpec, run_date: date | None = None) -> TrainPlan:
    """Read the labels, choose the grid and the chips (no pixels read)."""
    window = job.time.resolve(run_date or datetime.now(UTC).date())
    if job.labels is None:
        raise BadInputError("this job has no field labels", fix="give `labels:`")
    native = read_fields(job.labels, None)
    aoi = job_aoi(job, native)
    grid = grid_from_aoi(aoi, job.grid.resolution, job.grid.crs)
    fields = Fields(native.frame.to_crs(grid.crs), native.classes, native.dropped)
    clip = aoi.to_crs(grid_crs(grid)).geom
    fields.frame = fields.frame[fields.frame.intersects(clip)].reset_index(drop=True)
    if not len(fields.frame):
        raise BadInputError(
            f"no labelled field of {Path(job.labels.path).name} intersects the AOI",
            fix="check the AOI and the labels' CRS",
        )
    fields.frame["field"] = np.arange(len(fields.frame))
    raster = rasterize_fields(fields, grid)
    res = job.grid.resolution
    block = max(1, round(job.split.block_size / res))
    chips, block_split, field_split = sample_chips(
        raster,
        fields.frame["cls"].to_numpy(),
        size=job.sampling.chip_size,
        block=block,
        margin=math.ceil(job.split.buffer / res / 2),
        per_class=job.sampling.chips_per_class,
        max_per_field=job.sampling.max_per_polygon,
        min_labelled=job.sampling.min_labelled,
        fractions=(job.split.val_fraction, job.split.test_fraction),
        seeds=(job.split.seed, job.sampling.seed),
    )
    if not chips:
        raise BadInputError(
            f"no chip of {job.sampling.chip_size} px fits the labelled fields",
            fix="lower sampling.chip_size or sampling.min_labelled, or raise split.block_size",
        )
    digest = store_hash(job, window)
    return TrainPlan(
        run_dir=Path(job.out) / f"{job.name}-{digest[:12]}",
        store_hash=digest,
        grid=grid,
        aoi=aoi,
        window=window,
        fields=fields,
        field_raster=raster,
        chips=chips,
        block_split=block_split,
        field_split=field_split,
    )


def new_manifest(plan: TrainPlan, chip_size: int) -> ChipManifest:
    """The manifest of a fresh chip store: every chip pending."""
    frame = plan.fields.frame
    g = plan.grid
    return ChipManifest(
        store_hash=plan.store_hash,
        grid={
            "crs": g.crs.to_wkt() if g.crs else None,
            "transform": list(g.transform)[:6],
            "shape": list(g.shape.yx),
        },
        chip_size=chip_size,
        classes=[
            {"index": i, "id": c.id, "name": c.name} for i, c in enumerate(plan.fields.classes)
        ],
        fields={
            str(int(f)): {"field_id": str(fid), "cls": int(c), "split": str(plan.field_split[f])}
            for f, fid, c in zip(frame["field"], frame["field_id"], frame["cls"], strict=True)
        },
        chips={
            p.id: ChipRecord(p.row, p.col, p.split, p.block, p.field, p.cls) for p in plan.chips
        },
        dropped=dict(plan.fields.dropped),
    )


def chip_tasks(
    plan: TrainPlan,
    job: TrainJobSpec,
    items: dict[str, list[NormalizedItem]],
    todo: list[ChipPlan],
) -> list[ChipTask]:
    """One dask task per chip still to build, with its items, labels and field indices."""
    from eo_fusion.pipeline.plan import items_for_tile

    size = job.sampling.chip_size
    split_of = plan.field_split
    out = []
    for p in todo:
        core, padded = chip_grids(plan.grid, p, size, job.grid.halo)
        f = plan.field_raster[p.row : p.row + size, p.col : p.col + size]
        cls = plan.fields.frame["cls"].to_numpy()
        mine = (f >= 0) & (split_of[np.maximum(f, 0)] == p.split)
        label = np.where(mine, cls[np.maximum(f, 0)], -1)
        out.append(
            ChipTask(
                p.id,
                core,
                padded,
                job.grid.halo,
                items_for_tile(padded, items),
                dict(job.modalities),
                label,
                f,
                str(plan.run_dir / "chips.zarr"),
            )
        )
    return out


def search_items(job: TrainJobSpec, plan: TrainPlan) -> dict[str, list[NormalizedItem]]:
    """The map job's search over the AOI and window, for every modality."""
    from eo_fusion.pipeline.inputs import search_window

    return search_window(as_map_job(job, plan.aoi), plan.aoi, plan.window)


def describe(plan: TrainPlan) -> dict[str, Any]:
    """Counts for logs and the report: chips per split and class, fields per split."""
    per: dict[str, dict[int, int]] = {}
    for c in plan.chips:
        per.setdefault(c.split, {}).setdefault(c.cls, 0)
        per[c.split][c.cls] += 1
    fields = {s: int((plan.field_split == s).sum()) for s in ("train", "val", "test")}
    return {"chips": per, "fields": fields, "grid_shape": list(plan.grid.shape.yx)}
