"""``eo-fusion stack``: co-registered multi-sensor stacks for every tile of a job (Zarr, COG)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eo_fusion.cli import app
from eo_fusion.config import JobSpec, load_job


def job_aoi(job: JobSpec) -> Any:
    """The job's AOI as something :func:`eo_fusion.grid.aoi_geometry` takes."""
    from eo_fusion.grid import aoi_geometry

    a = job.aoi
    src = a.bbox if a.bbox is not None else (a.geojson if a.geojson is not None else a.wkt)
    return aoi_geometry(src, a.crs)


def job_datetime(job: JobSpec, today: datetime | None = None) -> str | None:
    """The job's time window as a STAC datetime string (``start/end``), or None for any time."""
    t = job.time
    if t.last_days:
        end = (today or datetime.now(UTC)).date()
        return f"{end - timedelta(days=t.last_days)}/{end}"
    if t.start or t.end:
        return f"{t.start or '..'}/{t.end or '..'}"
    return None


def _overlaps(item_bbox, tile_bbox) -> bool:
    return not (
        item_bbox[2] < tile_bbox[0]
        or item_bbox[0] > tile_bbox[2]
        or item_bbox[3] < tile_bbox[1]
        or item_bbox[1] > tile_bbox[3]
    )


@app.command("stack")
def stack_command(
    job_file: Path = typer.Argument(..., help="Job YAML (aoi, time, grid, modalities, catalog)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (stack.zarr, cog/)."),
    cog: bool = typer.Option(False, "--cog", help="Also write one COG per modality and tile."),
    tiles: str | None = typer.Option(
        None, "--tiles", help="Only these tile ids, comma-separated (e.g. r000_c000,r000_c001)."
    ),
) -> None:
    """Build co-registered stacks for every tile of a job and write them as Zarr.

    Each tile (core + halo) gets every modality of the job warped onto one grid, masked,
    reduced (composite or time series) and co-registration-checked; the result is group
    ``<tile id>`` of ``OUT/stack.zarr``. With --cog, ``OUT/cog/<tile id>/<modality>.tif`` too.

    Example: eo-fusion stack pipelines/sample_landcover.yaml --out out/stacks --cog
    """
    from eo_fusion.catalogs import open_catalog
    from eo_fusion.grid import aoi_mask, grid_from_aoi, make_tiles
    from eo_fusion.stack import build_stack
    from eo_fusion.stack_io import write_modality_cogs, write_stack_zarr

    job = load_job(job_file)
    geom = job_aoi(job)
    gbox = grid_from_aoi(geom, job.grid.resolution, job.grid.crs)
    all_tiles = make_tiles(gbox, job.grid.tile_size, job.grid.halo)
    if tiles:
        wanted = {t.strip() for t in tiles.split(",") if t.strip()}
        all_tiles = [t for t in all_tiles if t.id in wanted]
    catalog = open_catalog(job.catalog)
    when = job_datetime(job)
    geo = geom.to_crs("EPSG:4326").json
    items = {
        name: catalog.search(
            name,
            intersects=geo,
            datetime=when,
            max_cloud=spec.max_cloud,
            collections=spec.collections,
        ).normalized
        for name, spec in job.modalities.items()
    }
    out.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), transient=False) as progress:
        task = progress.add_task("stacking tiles", total=len(all_tiles))
        for tile in all_tiles:
            tb = tuple(tile.padded.geographic_extent.boundingbox)
            mine = {m: [i for i in its if _overlaps(i.bbox, tb)] for m, its in items.items()}
            ds = build_stack(tile.padded, mine, job.modalities)
            ds["aoi"] = (("y", "x"), aoi_mask(tile.padded, geom))
            ds.attrs["tile_id"] = tile.id
            ds.attrs["core_in_padded"] = [
                tile.core_in_padded[0].start,
                tile.core_in_padded[0].stop,
                tile.core_in_padded[1].start,
                tile.core_in_padded[1].stop,
            ]
            write_stack_zarr(ds, out / "stack.zarr", tile.id)
            if cog:
                write_modality_cogs(ds, out / "cog", tile.id)
            progress.advance(task)
    typer.echo(f"wrote {len(all_tiles)} tile(s) to {out / 'stack.zarr'}")
