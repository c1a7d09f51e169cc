"""``eo-fusion init``: write the starter job files into a folder (registered on :data:`app`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from eo_fusion.cli import app
from eo_fusion.resources import copy_starter_jobs


@app.command("init")
def init_command(
    folder: Path = typer.Argument(Path("."), help="folder to write the job files to"),
    force: bool = typer.Option(False, "--force", help="replace job files that already exist"),
) -> None:
    """Write the sample job file(s) into FOLDER, ready to run from there.

    The sample job maps land cover over the embedded sample catalog with the bundled model; both
    ship with eo-fusion, so it runs offline from any folder.

    Example: eo-fusion init my-maps && cd my-maps && eo-fusion map sample_landcover.yaml
    """
    written = copy_starter_jobs(folder, overwrite=force)
    console = Console(stderr=True, soft_wrap=True)  # paths on one line, whatever the width
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False)
    first = written[0]
    console.print(f"next: eo-fusion map {first}", markup=False, highlight=False)
