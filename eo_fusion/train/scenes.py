"""Scene (multi-label) training jobs: one chip per labelled item, labels from STAC properties.

For ``scene_labels`` jobs (BigEarthNet's CORINE labels, ``bigearthnet:labels``) every item of the
label modality found by the map job's search over the AOI and window becomes one chip: a
``chip_size`` window of the anchored UTM grid centred on the item's footprint, built like the
field chips (all modalities, the map job's tile rule for items). Spatial groups are the
connected sets of items whose footprints lie within ``split.buffer`` of each other (overlapping
or adjacent patches stay together); groups go wholly to train / val / test at random.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.geometry
from odc.geo import Geometry
from odc.geo.geobox import GeoBox

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.errors import BadInputError
from eo_fusion.grid import grid_crs, grid_from_aoi, utm_crs_for
from eo_fusion.train.chips import ChipManifest, ChipRecord, ChipTask
from eo_fusion.train.job import TrainJobSpec
from eo_fusion.train.plan import as_map_job, job_aoi, store_hash
from eo_fusion.train.sampling import assign_blocks

log = logging.getLogger(__name__)


@dataclass
class SceneChip:
    """One scene chip: its item, grids, group, split and class indices."""

    id: str
    item: NormalizedItem
    core: GeoBox
    padded: GeoBox
    group: int
    split: str
    labels: list[int]


@dataclass
class ScenePlan:
    """A scene job's chips and what they depend on."""

    run_dir: Path
    store_hash: str
    classes: list[str]
    chips: list[SceneChip]
    items: dict[str, list[NormalizedItem]]
    dropped: dict[str, int]


def _centred(item: NormalizedItem, size: int, res: float, halo: int) -> tuple[GeoBox, GeoBox]:
    foot = shapely.geometry.shape(item.geometry)
    c = foot.centroid
    grid = grid_from_aoi(Geometry(foot, "EPSG:4326"), res, utm_crs_for(c.x, c.y))
    h, w = grid.shape.yx
    if h < size or w < size:
        raise BadInputError(
            f"item {item.id} covers {h} × {w} px, less than a {size} px chip",
            fix="lower sampling.chip_size",
        )
    y0, x0 = (h - size) // 2, (w - size) // 2
    core = grid[y0 : y0 + size, x0 : x0 + size]
    return core, (core.pad(halo) if halo else core)


def _groups(chips: list[tuple[GeoBox, str]], buffer: float) -> list[int]:
    """Connected components of chips whose footprints are within ``buffer`` metres."""
    parent = list(range(len(chips)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (gi, _) in enumerate(chips):
        a = gi.extent.geom
        for j in range(i + 1, len(chips)):
            b = chips[j][0].extent.to_crs(grid_crs(gi)).geom
            if a.distance(b) <= buffer:
                parent[root(j)] = root(i)
    roots = sorted({root(i) for i in range(len(chips))})
    return [roots.index(root(i)) for i in range(len(chips))]


def _safe_id(item_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", item_id)


def plan_scenes(job: TrainJobSpec, run_date: date | None = None) -> ScenePlan:
    """Search the catalog and plan one chip per labelled item of the label modality."""
    from eo_fusion.pipeline.inputs import search_window

    spec = job.scene_labels
    assert spec is not None
    window = job.time.resolve(run_date or datetime.now(UTC).date())
    aoi = job_aoi(job, None)
    items = search_window(as_map_job(job, aoi), aoi, window)
    labelled, dropped = [], {}
    for it in items.get(spec.modality, []):
        names = it.properties.get(spec.property)
        if isinstance(names, list) and names:
            labelled.append((it, [str(n) for n in names]))
        else:
            dropped[it.id] = 1
    if not labelled:
        raise BadInputError(
            f"no {spec.modality} item over the AOI has the property {spec.property!r}",
            fix="check scene_labels.modality/property, the AOI and the time window",
        )
    classes = spec.classes or sorted({n for _, names in labelled for n in names})
    grids = [
        _centred(it, job.sampling.chip_size, job.grid.resolution, job.grid.halo)
        for it, _ in labelled
    ]
    groups = _groups(
        [(g[0], it.id) for g, (it, _) in zip(grids, labelled, strict=True)], job.split.buffer
    )
    n_groups = max(groups) + 1
    split_of = assign_blocks(
        list(range(n_groups)),
        n_groups,
        job.split.val_fraction,
        job.split.test_fraction,
        job.split.seed,
    )
    chips = []
    for (it, names), (core, padded), grp in zip(labelled, grids, groups, strict=True):
        idx = sorted({classes.index(n) for n in names if n in classes})
        chips.append(SceneChip(_safe_id(it.id), it, core, padded, grp, str(split_of[grp]), idx))
    digest = store_hash(job, window)
    return ScenePlan(
        Path(job.out) / f"{job.name}-{digest[:12]}", digest, classes, chips, items, dropped
    )


def scene_manifest(plan: ScenePlan, chip_size: int) -> ChipManifest:
    """A fresh manifest for the scene chips (no fields; ``labels`` per chip)."""
    return ChipManifest(
        store_hash=plan.store_hash,
        grid={"per_chip": True},
        chip_size=chip_size,
        classes=[{"index": i, "id": i + 1, "name": n} for i, n in enumerate(plan.classes)],
        fields={},
        chips={
            c.id: ChipRecord(0, 0, c.split, (c.group, 0), -1, -1, labels=c.labels)
            for c in plan.chips
        },
        dropped=dict(plan.dropped),
    )


def scene_tasks(plan: ScenePlan, job: TrainJobSpec, ids: set[str]) -> list[ChipTask]:
    """Chip tasks of the scene chips still to build (all modalities, the map job's tile rule)."""
    from eo_fusion.pipeline.plan import items_for_tile

    size = job.sampling.chip_size
    none = np.full((size, size), -1, dtype=np.int32)
    return [
        ChipTask(
            c.id,
            c.core,
            c.padded,
            job.grid.halo,
            items_for_tile(c.padded, plan.items),
            dict(job.modalities),
            none,
            none,
            str(plan.run_dir / "chips.zarr"),
        )
        for c in plan.chips
        if c.id in ids
    ]


def describe_scenes(plan: ScenePlan) -> dict[str, Any]:
    """Counts for the report: chips per split and class index, groups per split."""
    per: dict[str, dict[int, int]] = {}
    for c in plan.chips:
        for k in c.labels:
            per.setdefault(c.split, {}).setdefault(k, 0)
            per[c.split][k] += 1
    groups = {
        s: len({c.group for c in plan.chips if c.split == s}) for s in ("train", "val", "test")
    }
    return {"chips": per, "fields": groups, "items_without_labels": len(plan.dropped)}
