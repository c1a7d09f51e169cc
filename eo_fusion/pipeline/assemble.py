"""Assembling a run's products from its tile files: COGs, STAC documents, QA report.

The last stage of *plan → execute → assemble*. Everything it needs is in the
:class:`~eo_fusion.pipeline.plan.RunPlan` (grid, tiles, footprint, time range, output options) and
the run manifest (which tiles are done, their files, the provenance); it never reads the job.

Products (in ``plan.run_dir``)::

    <job>_classes.tif        COG, uint8 classes (+ .aux.xml raster attribute table)
    <job>_confidence.tif     COG, max probability in percent (unless output.confidence: false)
    <job>_probabilities.tif  COG, per-class probability in percent (on request)
    quicklook.png            class map with legend (with the report)
    report.json, report.md   QA report (unless output.report: false)
    stac/collection.json     Collection of the run; stac/<item>/<item>.json per product
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
from odc.geo.geobox import GeoBox

from eo_fusion import __version__
from eo_fusion.coreg.record import summarize_coreg
from eo_fusion.files import PARTIAL_TAG, sha256_file
from eo_fusion.pipeline.legend import ClassInfo
from eo_fusion.pipeline.manifest import RunManifest
from eo_fusion.pipeline.mosaic import MosaicLayer, layers_for, mosaic_vrt
from eo_fusion.pipeline.plan import RunPlan
from eo_fusion.pipeline.products import write_cog
from eo_fusion.pipeline.report import qa_report, write_quicklook, write_report
from eo_fusion.pipeline.stac_products import (
    ProductFile,
    build_collection,
    build_items,
    save_collection,
    validate_stac_files,
)

#: GDAL's block cache while the products are written (bytes). Measured on a 4000² px job:
#: 16, 32 and 64 MB wrote the COGs equally fast; the default (5 % of the RAM) held ~120 MB more.
#: Known limit: in a process where other GDAL work ran first (seen in the test suite), rasterio's
#: ``Env(GDAL_CACHEMAX=...)`` left GDAL's limit unchanged; in ``eo-fusion map`` it applies.
PRODUCTS_GDAL_CACHE_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Assembled:
    """What :func:`assemble` wrote.

    Attributes:
        products: product name (``classes``, ``confidence``, ``probabilities``) -> COG.
        stac: STAC JSON files written (validated).
        report: the Markdown report, ``None`` when the plan asks for none.
    """

    products: dict[str, Path] = field(default_factory=dict)
    stac: list[Path] = field(default_factory=list)
    report: Path | None = None


def cog_blocksize(requested: int, grid: GeoBox) -> int:
    """Halve the COG block size for small grids so that they still get an overview level."""
    size = requested
    while size >= 128 and max(grid.shape.yx) <= size:
        size //= 2
    return size


def _write_layer(
    plan: RunPlan,
    manifest: RunManifest,
    layer: MosaicLayer,
    classes: Sequence[ClassInfo],
    threads: int = 1,
) -> Path:
    """Mosaic one layer of every tile file (a VRT), then publish it as a COG."""
    windows = []
    for tile in plan.tiles:  # every tile: those without a finished output are nodata
        rec = manifest.tiles.get(tile.id)
        path = plan.run_dir / rec.output if rec and rec.state == "done" and rec.output else None
        windows.append((tile.core_in_grid, path))
    tags = {
        "EO_FUSION_JOB": plan.job_name,
        "EO_FUSION_RUN_ID": plan.run_id,
        "EO_FUSION_CONFIG_HASH": plan.config_hash,
        "EO_FUSION_VERSION": __version__,
    }
    blocksize = cog_blocksize(plan.blocksize, plan.grid)
    dst = plan.run_dir / f"{plan.job_name}_{layer.name}.tif"
    vrt = plan.run_dir / f".{plan.job_name}_{layer.name}.mosaic{PARTIAL_TAG}.vrt"
    try:
        mosaic_vrt(vrt, plan.grid, windows, layer)
        write_cog(
            vrt, dst, kind=layer.name, classes=classes, blocksize=blocksize, tags=tags,
            threads=threads,
        )  # fmt: skip
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(vrt)
    return dst


def _write_layers(
    plan: RunPlan,
    manifest: RunManifest,
    layers: Sequence[MosaicLayer],
    classes: Sequence[ClassInfo],
    quicklook: Path | None,
) -> dict[str, Path]:
    """Every layer's COG (and the quicklook, when asked for): product name -> COG."""
    # Layers are written side by side: GDAL releases the GIL while it reads the tile files,
    # compresses and builds overviews, so two layers take two cores (the quicklook is drawn
    # while the others are still being written). GDAL's block cache is bounded meanwhile
    # (rasterio.Env sets the process-wide limit, which the pool's threads share): by default
    # it may grow to 5 % of the RAM, and it kept every block the COG copies passed through.
    cpus = os.cpu_count() or 1
    workers = min(len(layers), cpus)
    with (
        rasterio.Env(GDAL_CACHEMAX=PRODUCTS_GDAL_CACHE_BYTES),
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        pending = {
            layer.name: pool.submit(_write_layer, plan, manifest, layer, classes, cpus // workers)
            for layer in layers
        }
        if quicklook is not None:
            title = f"{plan.job_name} ({plan.run_id})"
            write_quicklook(pending["classes"].result(), quicklook, classes, title)
        return {name: future.result() for name, future in pending.items()}


def _product_files(cogs: dict[str, Path], quicklook: Path | None) -> list[ProductFile]:
    """The COGs with their sha256 and, for the class map, its RAT sidecar and quicklook."""
    classes_cog = cogs["classes"]
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
    # Hashed once, for both the STAC file:checksum and the report. write_cog has validated each
    # COG (rio-cogeo, strict) before publishing it, so no second validation here.
    return [
        ProductFile(
            kind=k, path=p, extra_assets=extra if k == "classes" else {}, sha256=sha256_file(p)
        )
        for k, p in cogs.items()
    ]


def run_coreg_summary(manifest: RunManifest) -> dict[str, Any]:
    """:func:`~eo_fusion.coreg.record.summarize_coreg` over the manifest's finished tiles."""
    return summarize_coreg({t: r.coreg for t, r in manifest.tiles.items() if r.coreg})


def _vertical_datums(plan: RunPlan) -> dict[str, Any]:
    """``{"vertical_datum": {modality: datum}}`` for the plan's elevation modalities whose
    items name a datum (:func:`eo_fusion.sources.elevation.vertical_datum_of`), else ``{}``."""
    from eo_fusion.modalities import find_modality
    from eo_fusion.sources.elevation import vertical_datum_of

    items: dict[str, dict[str, Any]] = {}
    for task in plan.tasks:
        for name, its in task.items.items():
            mdef = find_modality(name)
            if mdef is not None and mdef.family == "elevation":
                items.setdefault(name, {}).update({it.id: it for it in its})
    datums = {n: vertical_datum_of(list(its.values())) for n, its in sorted(items.items())}
    known = {n: d for n, d in datums.items() if d}
    return {"vertical_datum": known} if known else {}


def _write_stac(
    plan: RunPlan,
    manifest: RunManifest,
    products: Sequence[ProductFile],
    classes: Sequence[ClassInfo],
    input_issues: Sequence[str],
) -> list[Path]:
    # What the pixels came from (fingerprints in "inputs") and what was wrong with it.
    prov = {**manifest.provenance, "input_issues": list(input_issues)}
    items = build_items(
        products,
        run_id=plan.run_id,
        grid=plan.grid,
        footprint=plan.footprint,
        window=plan.time_range,
        classes=classes,
        # eo_fusion:coreg: the per-modality summary of the tiles' co-registration records;
        # eo_fusion:vertical_datum: modality -> datum of the elevation inputs (when known).
        provenance={**prov, "coreg": run_coreg_summary(manifest), **_vertical_datums(plan)},
        base_dir=plan.run_dir,
    )
    collection = build_collection(
        items,
        run_id=plan.run_id,
        description=plan.description or f"eo-fusion map products of job {plan.job_name}",
    )
    stac = save_collection(collection, plan.run_dir / "stac")
    validate_stac_files(stac)
    return stac


def assemble(
    plan: RunPlan,
    manifest: RunManifest,
    classes: Sequence[ClassInfo],
    *,
    reused: int = 0,
    notes: Sequence[str] = (),
    recomputed: Mapping[str, Sequence[str]] | None = None,
    input_issues: Sequence[str] = (),
) -> Assembled:
    """Write the run's COGs, STAC collection and (if planned) QA report into ``plan.run_dir``.

    Args:
        plan: the run.
        manifest: its manifest after execution (tile outputs and provenance).
        classes: the predictor's legend.
        reused: tiles taken over from an earlier attempt (for the report).
        notes: extra lines for the report's notes.
        recomputed: why tiles were computed in this attempt -> tile ids (for the report).
        input_issues: the run's input problems (report and STAC ``eo_fusion:input_issues``).

    Raises:
        ProductError: a COG or STAC document does not validate, or a tile file does not fit.
    """
    layers = layers_for(plan.output.confidence, plan.output.probabilities, len(classes))
    quicklook = plan.run_dir / "quicklook.png" if plan.report else None
    cogs = _write_layers(plan, manifest, layers, classes, quicklook)
    products = _product_files(cogs, quicklook)
    stac = _write_stac(plan, manifest, products, classes, input_issues)
    if not plan.report:
        return Assembled(products=cogs, stac=stac)
    report = qa_report(
        plan,
        manifest,
        products,
        classes=classes,
        stac_documents=len(stac),
        reused=reused,
        notes=notes,
        recomputed=recomputed or {},
        input_issues=input_issues,
    )
    return Assembled(products=cogs, stac=stac, report=write_report(plan.run_dir, report, quicklook))
