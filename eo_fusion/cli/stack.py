"""``eo-fusion stack``: co-registered multi-sensor stacks for every tile of a job (Zarr, COG)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eo_fusion.cli import app
from eo_fusion.config import load_job


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
    from eo_fusion.grid import aoi_mask
    from eo_fusion.pipeline.inputs import search_job
    from eo_fusion.pipeline.plan import job_area, plan_run
    from eo_fusion.stack import build_stack
    from eo_fusion.stack_io import write_modality_cogs, write_stack_zarr

    job = load_job(job_file)
    run_date = datetime.now(UTC).date()
    area = job_area(job, run_date)
    # The map job's planning: the same search, the same tiles (those touching the AOI), the same
    # items per tile; a last_days window ends today (UTC).
    tasks = plan_run(job, run_date, search_job(job, area), area=area).tasks
    if tiles:
        wanted = {t.strip() for t in tiles.split(",") if t.strip()}
        tasks = tuple(t for t in tasks if t.tile_id in wanted)
    out.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), transient=False) as progress:
        bar = progress.add_task("stacking tiles", total=len(tasks))
        for task in tasks:
            tile = task.tile
            ds = build_stack(tile.padded, task.items, task.modalities, gdal=task.gdal)
            ds["aoi"] = (("y", "x"), aoi_mask(tile.padded, task.aoi))
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
            progress.advance(bar)
    typer.echo(f"wrote {len(tasks)} tile(s) to {out / 'stack.zarr'}")
