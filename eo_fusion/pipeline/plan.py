"""Planning a mapping run: pure functions from (job, grid, items) to one TileTask per tile.

Nothing here reads pixels, opens files or talks to a scheduler: a plan can be built, inspected and
tested without data. Each :class:`TileTask` carries everything a worker needs (grids, the items
that intersect the tile, modality options, the model reference and output options), so tasks are
self-contained when pickled to dask workers in other processes or on other hosts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import shapely
import shapely.geometry
from odc.geo import Geometry
from odc.geo.geobox import GeoBox

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import JobSpec, ModalitySpec, ModelRef, spec_hash
from eo_fusion.gdal import GDALOptions
from eo_fusion.grid import Tile, grid_crs

#: Class value written where there is no prediction (outside the AOI, no valid input, failed tile).
NODATA_CLASS = 255
#: Confidence / probability value written where there is no prediction (they are stored 0–100 %).
NODATA_PERCENT = 255


@dataclass(frozen=True)
class OutputOptions:
    """What a worker writes for each tile (from ``OutputSpec``; picklable, no paths)."""

    confidence: bool = True
    probabilities: bool = False


@dataclass(frozen=True)
class TileTask:
    """Everything needed to compute one tile, as a picklable value.

    Attributes:
        tile_id: ``r{row:03d}_c{col:03d}``.
        core: the tile's own pixels on the job grid (what ends up in the product).
        padded: ``core`` grown by the halo (what is read and predicted, for context).
        core_in_padded: ``(slice_y, slice_x)`` of ``core`` inside ``padded``.
        core_in_grid: ``(slice_y, slice_x)`` of ``core`` inside the job grid (the COG window).
        items: modality -> items whose footprint intersects ``padded`` (time-sorted).
        modalities: modality -> its options from the job.
        model: which model and head to run.
        aoi: the AOI geometry in the grid CRS (pixels whose centre is outside get nodata).
        output: what to write besides the class map.
        gdal: GDAL settings applied inside the worker around every read.
        output_relpath: tile output file relative to the run folder.
        threads: compute threads the tile may use (torch intra-op threads).
    """

    tile_id: str
    core: GeoBox
    padded: GeoBox
    core_in_padded: tuple[slice, slice]
    core_in_grid: tuple[slice, slice]
    items: Mapping[str, tuple[NormalizedItem, ...]]
    modalities: Mapping[str, ModalitySpec]
    model: ModelRef
    aoi: Geometry
    output: OutputOptions = field(default_factory=OutputOptions)
    gdal: GDALOptions = field(default_factory=GDALOptions)
    output_relpath: str = ""
    threads: int = 1

    def input_ids(self) -> dict[str, list[str]]:
        """modality -> ids of the items this tile reads (recorded in the manifest)."""
        return {m: [it.id for it in items] for m, items in self.items.items()}


def run_hash(
    job: JobSpec, window: tuple[date | None, date | None], *, config_hash: str | None = None
) -> str:
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


def run_id_for(
    job: JobSpec, window: tuple[date | None, date | None], *, config_hash: str | None = None
) -> str:
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
    """One :class:`TileTask` per tile whose padded footprint touches the AOI.

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
    tasks = []
    for tile in tiles:
        if not tile.core.extent.geom.intersects(aoi_grid.geom):
            continue
        tasks.append(
            TileTask(
                tile_id=tile.id,
                core=tile.core,
                padded=tile.padded,
                core_in_padded=tile.core_in_padded,
                core_in_grid=tile.core_in_grid,
                items=items_for_tile(tile.padded, items_by_modality),
                modalities=dict(job.modalities),
                model=job.model,
                aoi=aoi_grid,
                output=out_opts,
                gdal=gdal or GDALOptions(),
                output_relpath=f"tiles/{tile.id}.tif",
                threads=threads,
            )
        )
    return tasks


def describe_plan(tasks: Sequence[TileTask]) -> dict[str, Any]:
    """Small summary of a plan for logs: tile count, pixel counts, items per modality."""
    items: dict[str, set[str]] = {}
    for t in tasks:
        for m, ids in t.input_ids().items():
            items.setdefault(m, set()).update(ids)
    return {
        "tiles": len(tasks),
        "core_pixels": sum(t.core.shape.y * t.core.shape.x for t in tasks),
        "padded_pixels": sum(t.padded.shape.y * t.padded.shape.x for t in tasks),
        "items": {m: len(ids) for m, ids in items.items()},
    }
