"""``eo-fusion search`` and ``eo-fusion catalog list|build|serve``."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from eo_fusion.cli import app
from eo_fusion.errors import BadInputError

if TYPE_CHECKING:
    from eo_fusion.catalogs.build import BuildOptions, BuildPlan

catalog_app = typer.Typer(
    help="List the named catalogs; build and serve local STAC catalogs.\n\n"
    "Example: eo-fusion catalog serve sample",
    no_args_is_help=True,
)
app.add_typer(catalog_app, name="catalog")


def _bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError as e:
        raise BadInputError(f"--bbox '{text}' is not 4 numbers", fix="minx,miny,maxx,maxy") from e
    if len(vals) != 4:
        raise BadInputError(f"--bbox '{text}' needs 4 numbers", fix="minx,miny,maxx,maxy")
    return vals  # type: ignore[return-value]


@app.command("search")
def search_command(
    catalog: str = typer.Option(
        "sample", "--catalog", "-c", help="catalog name, YAML, catalog folder, .parquet or URL"
    ),
    modality: str = typer.Option(None, "--modality", "-m", help="s2-l2a, s2-l1c, s1-grd, dem..."),
    bbox: str = typer.Option(None, "--bbox", help="minx,miny,maxx,maxy in EPSG:4326 (lon/lat)"),
    intersects: Path = typer.Option(None, "--intersects", help="GeoJSON file with the AOI"),
    when: str = typer.Option(None, "--datetime", "-d", help="2020-06-01/2020-08-31, 2020-06..."),
    max_cloud: float = typer.Option(None, "--max-cloud", help="max eo:cloud_cover (%)"),
    max_items: int = typer.Option(100, "--max-items", help="stop after this many items"),
    collection: list[str] = typer.Option(None, "--collection", help="explicit collection id"),
    out: Path = typer.Option(None, "--out", "-o", help="write items to .json or .parquet"),
) -> None:
    """Search a STAC catalog and print a table of the items found.

    Example: eo-fusion search --catalog sample --modality s2-l1c --bbox 14.5,45.8,14.6,45.9
    --datetime 2015-07-01/2015-09-30 --max-cloud 20
    """
    import shapely.geometry

    from eo_fusion.catalogs import open_catalog
    from eo_fusion.grid import aoi_geometry

    geom = None
    if intersects is not None:
        # All features (union), honouring a GeoJSON "crs" member; GridError if empty.
        geom = shapely.geometry.mapping(aoi_geometry(Path(intersects)).to_crs("EPSG:4326").geom)
    result = open_catalog(catalog).search(
        modality,
        bbox=_bbox(bbox),
        intersects=geom,
        datetime=when,
        max_cloud=max_cloud,
        max_items=max_items,
        collections=collection or None,
    )
    gdf = result.to_geodataframe()
    table = Table(title=f"{len(gdf)} items from {catalog}" + (" (truncated)" * result.truncated))
    for col in ("id", "date", "cloud %", "bands", "AOI share"):
        table.add_column(col, overflow="fold")
    for row in gdf.itertuples():
        share = "" if row.aoi_share is None else f"{row.aoi_share:.0%}"
        cloud = "" if row.cloud_cover is None else f"{row.cloud_cover:.1f}"
        table.add_row(row.id, f"{row.datetime:%Y-%m-%d %H:%M}", cloud, row.bands, share)
    Console().print(table)
    if out is not None:
        path = result.save(out)
        Console(stderr=True).print(f"wrote {len(result)} items to {path}")


@catalog_app.command("list")
def list_command() -> None:
    """List the named catalogs (shipped with eo-fusion) that jobs and --catalog can name.

    Example: eo-fusion catalog list
    """
    from eo_fusion.catalogs.providers import catalog_names, load_catalog_spec

    table = Table(title="named catalogs")
    for col in ("name", "kind", "title", "where"):
        table.add_column(col, overflow="fold")
    for name in catalog_names():
        spec = load_catalog_spec(name)
        table.add_row(name, spec.kind, spec.title, spec.url or str(spec.path))
    Console().print(table)


@catalog_app.command("build")
def build_command(
    paths: list[Path] = typer.Argument(
        None, help="files or folders (GeoTIFF/COG, JPEG/PNG+world file, JP2, LAS/LAZ, OSM)"
    ),
    out: Path = typer.Option(None, "--out", "-o", help="output folder for the static catalog"),
    modality: str = typer.Option(
        None, "--modality", "-m", help="modality of all inputs (default: inferred per file)"
    ),
    when: str = typer.Option(
        None, "--datetime", "-d", help="acquisition time of all inputs: ISO time, date or a/b"
    ),
    bands: str = typer.Option(
        None,
        "--bands",
        help="per band, comma-separated: registry key (s1:VV) or band name (VV, B04); '-' skips",
    ),
    units: str = typer.Option(None, "--units", help="physical units of the bands (dB, m, ...)"),
    crs: str = typer.Option(
        None, "--crs", help="CRS of files that declare none: EPSG:n, WKT or a .wkt/.prj file"
    ),
    catalog_id: str = typer.Option(
        None, "--id", help="catalog id (default: the existing catalog's, else 'local')"
    ),
    replace: bool = typer.Option(
        False, "--replace", help="replace the catalog in --out instead of adding to it"
    ),
) -> None:
    """Build (or add to) a static STAC catalog + stac-geoparquet from local files.

    Modality, band keys and units are inferred from each file (band descriptions, units and
    tags, names such as _B04/_VV/dem/MSIL2A, layout); per-band files of one acquisition become
    one item. A build into a folder with a catalog adds to it (--replace starts afresh).

    Example: eo-fusion catalog build scenes/ --out stac/

    (The embedded sample catalog is rebuilt by the maintainer target `make sample-catalog`.)
    """
    console = Console(stderr=True)
    from eo_fusion.catalogs.build import plan_build

    if not paths:
        raise BadInputError("no input files given", fix="pass files or folders")
    if out is None:
        raise BadInputError("--out is missing", fix="name the folder for the catalog: --out stac/")
    opts = _build_options(modality, when, bands, units, crs)
    with console.status("reading files"):
        plan = plan_build(paths, opts)
    for note in plan.notes:
        console.print(f"[yellow]warning:[/yellow] {note}")
    _write_catalog(console, plan, out, catalog_id, replace)


def _write_catalog(
    console: Console, plan: BuildPlan, out: Path, catalog_id: str | None, replace: bool
) -> None:
    from eo_fusion.catalogs.build import build_catalog

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bar:
        task = bar.add_task("writing items", total=len(plan.specs))
        result = build_catalog(
            plan.specs, out, catalog_id=catalog_id, replace=replace,
            progress=lambda: bar.advance(task),
        )  # fmt: skip
    console.print(
        f"wrote {result.n_items} items in {len(result.collections)} collections "
        f"({', '.join(result.collections)}) to {result.catalog_json} and {result.geoparquet}: "
        f"{len(result.added)} new, {len(result.replaced)} replaced, {len(result.kept)} kept"
    )


def _build_options(
    modality: str | None, when: str | None, bands: str | None, units: str | None, crs: str | None
) -> BuildOptions:
    """The build options, checked against each other before any file is read."""
    from eo_fusion.catalogs.build import BuildOptions
    from eo_fusion.catalogs.build.infer import normalise_units, resolve_band_option
    from eo_fusion.catalogs.build.raster import parse_crs
    from eo_fusion.catalogs.build.times import parse_option
    from eo_fusion.modalities import get_modality

    mdef = get_modality(modality) if modality else None
    keys = tuple(resolve_band_option(k) for k in bands.split(",")) if bands is not None else None
    if keys is not None and not any(keys):
        raise BadInputError(f"--bands '{bands}' places no band", fix="name at least one band")
    if mdef is not None and keys:
        wrong = [k for k in keys if k and k.split(":", 1)[0] != mdef.band_family]
        if wrong:
            raise BadInputError(
                f"--bands {', '.join(wrong)} are not bands of --modality {modality}",
                fix=f"use {mdef.band_family}:... keys, or leave --modality out (it is inferred)",
            )
    if crs and Path(crs).is_file():  # a .wkt/.prj file
        crs = Path(crs).read_text(encoding="utf-8").strip()
    if crs:
        parse_crs(crs, "--crs")
    if units is not None and normalise_units(units) is None:
        raise BadInputError("--units is empty", fix="e.g. --units dB")
    return BuildOptions(
        modality=modality,
        when=parse_option(when) if when else None,
        band_keys=keys,
        units=normalise_units(units),
        crs=crs,
    )


@catalog_app.command("serve")
def serve_command(
    path: str = typer.Argument(
        ..., help="named local catalog, static catalog folder, catalog.json or .parquet"
    ),
    port: int = typer.Option(None, "--port", help="STAC API port (default: a free one)"),
) -> None:
    """Serve a local catalog as a STAC API (rustac) + byte-range file server on 127.0.0.1.

    PATH is a catalog folder, catalog.json or .parquet file, or the name of a local catalog
    (`eo-fusion catalog list`).

    Example: eo-fusion catalog serve sample --port 7822
    """
    from eo_fusion.catalogs.serve import serve_catalog

    console = Console()
    stop = threading.Event()
    with serve_catalog(path, port=port) as served:
        console.print(f"STAC API:    {served.api_url}  ({served.n_items} items)")
        console.print(f"asset files: {served.files.url}")
        console.print("press Ctrl-C to stop")
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    console.print("stopped")
    sys.stdout.flush()
