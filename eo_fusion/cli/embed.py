"""``eo-fusion embed``: per-patch embedding maps over an AOI (registered on ``app``)."""

from __future__ import annotations

from pathlib import Path

import typer

from eo_fusion.cli import app


@app.command("embed")
def embed_command(
    job_file: Path = typer.Argument(
        ..., help="Embedding job YAML (aoi, time, grid, modalities, checkpoint; docs/training.md)."
    ),
    force: bool = typer.Option(False, "--force", help="Recompute every tile."),
) -> None:
    """Write the encoder's per-patch embeddings over an AOI as Zarr (and COG), tile by tile.

    Windows of the model's inference size sit on the grid's global lattice and are blended,
    so the result does not depend on the tile size; a rerun verifies each tile's sha256 and
    computes only what is missing. Writes OUT/<job>-<hash>/embeddings.zarr, embed.json,
    item.json (STAC) and, with output.cog, embeddings.tif.

    Example: eo-fusion embed pipelines/embed_sample.yaml
    """
    from eo_fusion.embed import load_embed_job, run_embed_job

    summary = run_embed_job(load_embed_job(job_file), force=force)
    typer.echo(
        f"embedded {summary['tiles']} tile(s) ({summary['computed']} computed) into "
        f"{summary['files']['zarr']}; STAC Item {summary['item']}"
    )
