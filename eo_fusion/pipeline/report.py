"""QA report of a mapping run: ``report.json``, a readable ``report.md`` and a quicklook PNG.

Class statistics are counted from the finished class COG block by block (memory: one block), so
they describe exactly what was delivered. Areas are pixel counts × pixel area: hectares when the
grid CRS is projected in metres (UTM, the default); for other CRSs the report says so instead of
guessing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox

from eo_fusion.coreg.record import coreg_rows, summarize_coreg
from eo_fusion.files import atomic_output, atomic_write_text
from eo_fusion.grid import grid_crs
from eo_fusion.pipeline.legend import NODATA_CLASS, ClassInfo
from eo_fusion.pipeline.manifest import RunManifest, utc_now

if TYPE_CHECKING:
    from eo_fusion.pipeline.plan import RunPlan
    from eo_fusion.pipeline.stac_products import ProductFile

QUICKLOOK_MAX_PX = 1024


def class_stats(
    classes_cog: Path, conf_cog: Path | None = None
) -> tuple[np.ndarray, dict[int, float] | None]:
    """Pixel count per value (0–255) of the class map, and mean confidence (0–1) per class.

    Reads the class COG (and the confidence COG, on the same grid and blocks) block by block.
    The mean confidence is ``None`` without ``conf_cog``; nodata pixels are left out of it.
    """
    counts = np.zeros(256, dtype=np.int64)
    sums = np.zeros(256, dtype=np.float64)
    with contextlib.ExitStack() as stack:
        cls_src = stack.enter_context(rasterio.open(classes_cog))
        conf_src = stack.enter_context(rasterio.open(conf_cog)) if conf_cog else None
        for _, win in cls_src.block_windows(1):
            c = cls_src.read(1, window=win).ravel()
            counts += np.bincount(c, minlength=256)
            if conf_src is not None:
                p = conf_src.read(1, window=win).ravel().astype(np.float64)
                ok = c != NODATA_CLASS
                sums += np.bincount(c[ok], weights=p[ok] / 100.0, minlength=256)
    if conf_cog is None:
        return counts, None
    mapped = counts.copy()
    mapped[NODATA_CLASS] = 0
    return counts, {int(v): float(sums[v] / mapped[v]) for v in np.flatnonzero(mapped)}


def pixel_area_ha(grid: GeoBox) -> float | None:
    """Area of one pixel in hectares, or ``None`` when the CRS is not projected in metres."""
    crs = grid.crs
    if crs is None or crs.geographic or (crs.units and crs.units[0] not in ("metre", "meter", "m")):
        return None
    return abs(grid.resolution.x * grid.resolution.y) / 10_000.0


def class_table(
    counts: np.ndarray,
    classes: Sequence[ClassInfo],
    grid: GeoBox,
    confidence: Mapping[int, float] | None = None,
) -> list[dict[str, Any]]:
    """Per class: value, name, colour, pixels, hectares, percent of mapped pixels, confidence."""
    ha = pixel_area_ha(grid)
    mapped = int(counts.sum() - counts[NODATA_CLASS])
    rows = []
    for c in sorted(classes, key=lambda c: c.value):
        n = int(counts[c.value])
        rows.append(
            {
                "value": c.value,
                "name": c.name,
                "color": c.color,
                "pixels": n,
                "hectares": round(n * ha, 4) if ha is not None else None,
                "percent": round(100.0 * n / mapped, 3) if mapped else 0.0,
                "mean_confidence": (
                    round(confidence[c.value], 4) if confidence and c.value in confidence else None
                ),
            }
        )
    return rows


def write_quicklook(cog: Path, png: Path, classes: Sequence[ClassInfo], title: str) -> None:
    """PNG of the class map (nearest; at most ``QUICKLOOK_MAX_PX`` px on a side, small maps
    enlarged to about half that) with its title above and a legend beside it.

    Drawn with Pillow rather than a plotting library: importing and laying out a matplotlib
    figure took ~1 s and ~50 MB at the end of every map job, for a picture this simple.
    """
    from PIL import Image, ImageDraw, ImageFont

    with rasterio.open(cog) as src:
        scale = max(src.width, src.height) / QUICKLOOK_MAX_PX
        shape = (
            (max(1, int(src.height / scale)), max(1, int(src.width / scale)))
            if scale > 1
            else (src.height, src.width)
        )
        data = src.read(1, out_shape=shape)  # decimated reads use the mode overviews
    lut = np.full((256, 3), 255, dtype=np.uint8)  # no data (and unknown values): white
    for c in classes:
        lut[c.value] = c.rgb()
    picture = Image.fromarray(lut[data], mode="RGB")
    enlarge = max(1, QUICKLOOK_MAX_PX // 2 // max(data.shape))
    if enlarge > 1:
        picture = picture.resize(
            (picture.width * enlarge, picture.height * enlarge), Image.Resampling.NEAREST
        )
    font, title_font = ImageFont.load_default(size=14), ImageFont.load_default(size=16)
    entries = [(c.name, c.rgb()) for c in classes] + [("no data", (255, 255, 255))]
    pad, swatch, row = 16, 16, 24
    legend_w = swatch + 8 + int(max(font.getlength(name) for name, _ in entries))
    title_h = 32
    width = max(
        pad + picture.width + pad + legend_w + pad, pad + int(title_font.getlength(title)) + pad
    )
    height = title_h + pad + max(picture.height, row * len(entries)) + pad
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(picture, (pad, title_h + pad))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad // 2), title, fill="black", font=title_font)
    draw.rectangle(
        (pad - 1, title_h + pad - 1, pad + picture.width, title_h + pad + picture.height),
        outline="black",
    )
    x0 = pad + picture.width + pad
    for i, (name, rgb) in enumerate(entries):
        y = title_h + pad + i * row
        draw.rectangle((x0, y, x0 + swatch, y + swatch), fill=rgb, outline="black")
        draw.text((x0 + swatch + 8, y), name, fill="black", font=font)
    with atomic_output(png, ".tmp.png") as tmp:
        canvas.save(tmp, format="PNG")


def render_markdown(report: Mapping[str, Any], quicklook_name: str | None) -> str:
    """The human-readable report page."""
    r = report
    lines = [f"# Map report: {r['job']['name']}", ""]
    if r["job"].get("description"):
        lines += [r["job"]["description"], ""]
    g = r["grid"]
    lines += [
        f"* Run: `{r['run_id']}` (run date {r['run_date']}, finished {r['finished']})",
        f"* Time window: {r['time_window'][0] or 'open'} … {r['time_window'][1] or 'open'}",
        f"* Grid: {g['shape'][1]} × {g['shape'][0]} px (width × height) at {g['resolution']} "
        f"{g['units']}, {g['crs']}; area {g['area_km2']} km²"
        if g.get("area_km2") is not None
        else f"* Grid: {g['shape'][1]} × {g['shape'][0]} px, {g['crs']}",
        f"* Tiles: {r['tiles']['total']} total, {r['tiles']['done']} done "
        f"({r['tiles']['reused']} reused from an earlier attempt), {r['tiles']['failed']} failed",
        f"* Model: {r['provenance'].get('model', 'n/a')}",
        f"* COG validation (rio-cogeo, strict): {r['validation']['cog']}",
        f"* STAC validation (schemas in eo_fusion/schemas): {r['validation']['stac']}",
        "",
    ]
    if quicklook_name:
        lines += [f"![quicklook]({quicklook_name})", ""]
    lines += [
        "## Classes",
        "",
        "| value | class | colour | pixels | hectares | % of mapped | mean confidence |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in r["classes"]:
        ha = "n/a" if row["hectares"] is None else f"{row['hectares']:.2f}"
        conf = "n/a" if row["mean_confidence"] is None else f"{row['mean_confidence']:.2f}"
        lines.append(
            f"| {row['value']} | {row['name']} | `{row['color']}` | {row['pixels']} | {ha} | "
            f"{row['percent']:.1f} | {conf} |"
        )
    lines += [
        "",
        f"No-data pixels (outside the AOI, no valid input, failed tiles): {r['nodata_pixels']}",
        "",
    ]
    if r["failures"]:
        lines += ["## Failed tiles", "", "| tile | attempts | error |", "|---|---:|---|"]
        for f in r["failures"]:
            lines.append(f"| {f['tile']} | {f['attempts']} | {f['error']} |")
        lines.append("")
    lines += _resume_md(r.get("resume", {}))
    lines += _inputs_md(r.get("inputs", {}))
    lines += _sources_md(r["provenance"].get("inputs", {}))
    lines += _coreg_markdown(r.get("coreg") or {})
    lines += ["## Products", "", "| file | sha256 |", "|---|---|"]
    for name, sha in r["products"].items():
        lines.append(f"| `{name}` | `{sha}` |")
    lines += ["", "## Notes", ""]
    lines += [f"* {n}" for n in r.get("notes", [])]
    return "\n".join(lines) + "\n"


def _resume_md(resume: Mapping[str, Any]) -> list[str]:
    if not resume:
        return []
    lines = [
        "## Resume",
        "",
        f"* Reused from an earlier attempt: {resume.get('reused', 0)} tile(s)",
    ]
    for why, tiles in resume.get("recomputed", {}).items():
        shown = ", ".join(tiles[:12]) + (f" … (+{len(tiles) - 12})" if len(tiles) > 12 else "")
        lines.append(f"* Recomputed {len(tiles)} tile(s): {why} — {shown}")
    return [*lines, ""]


def _inputs_md(inputs: Mapping[str, Any]) -> list[str]:
    if not inputs:
        return []
    share = inputs.get("partial_share")
    lines = [
        "## Inputs",
        "",
        f"* Mapped pixels from partial inputs (some modality without a valid value): "
        f"{inputs.get('partial_pixels', 0)} of {inputs.get('mapped_pixels', 0)}"
        + (f" ({100 * share:.2f}%)" if share is not None else ""),
    ]
    for m, s in sorted(inputs.get("search", {}).items()):
        cut = " — **truncated by the page cap**" if s.get("truncated") else ""
        lines.append(f"* Search {m}: {s.get('items')} item(s), {s.get('pages')} page(s){cut}")
    days = inputs.get("dates_without_clear", {})
    for m, d in sorted(days.items()):
        lines.append(f"* {m}: dates without clear pixels: {', '.join(d)}")
    problems = inputs.get("issues", [])
    lines.append(
        f"* Strict mode: {'on' if inputs.get('strict') else 'off'}; "
        f"{len(problems)} input problem(s)" + (":" if problems else "")
    )
    lines += [f"  * {p}" for p in problems[:50]]
    if len(problems) > 50:
        lines.append(f"  * … (+{len(problems) - 50}, see report.json)")
    return [*lines, ""]


def _sources_md(inputs: Mapping[str, Any]) -> list[str]:
    """What the pixels came from: the fingerprinted items and asset files."""
    if not inputs:
        return []
    aoi = inputs.get("aoi", {})
    lines = [
        "## What the pixels came from",
        "",
        f"* AOI {aoi.get('source')}: sha256 `{aoi.get('sha256')}`",
        f"* Inputs fingerprint (AOI, items, assets, model, code): `{inputs.get('digest')}`",
        "",
        "| modality | item | item sha256 | asset files |",
        "|---|---|---|---|",
    ]
    for m, items in sorted(inputs.get("items", {}).items()):
        for item_id, p in sorted(items.items()):
            assets = ", ".join(
                f"{k} ({a.get('kind')}: {_asset_id(a)})" for k, a in p.get("assets", {}).items()
            )
            lines.append(f"| {m} | {item_id} | `{p.get('item_sha256', '')[:16]}` | {assets} |")
    return [*lines, ""]


def _asset_id(a: Mapping[str, Any]) -> str:
    if a.get("sha256"):
        return f"sha256 {a['sha256'][:12]}…, {a.get('size')} B"
    if a.get("etag") or a.get("last_modified"):
        return f"ETag {a.get('etag')}, Last-Modified {a.get('last_modified')}, {a.get('size')} B"
    return a.get("note") or "href only"


def _coreg_markdown(coreg: Mapping[str, Any]) -> list[str]:
    """The co-registration section: one line per modality, then one per tile estimate."""
    summary, rows = coreg.get("summary") or {}, coreg.get("tiles") or []
    if not summary:
        return []
    lines = [
        "## Co-registration",
        "",
        "| modality | reference | tiles | estimated | applied | median dx, dy (px) | "
        "median confidence |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for mod, s in summary.items():
        shift = f"{s['median_dx_px']:+.2f}, {s['median_dy_px']:+.2f}" if s.get("estimated") else "–"
        conf = f"{s['median_confidence']:.1f}" if s.get("estimated") else "–"
        lines.append(
            f"| {mod} | {s.get('reference')} | {s['tiles']} | {s['estimated']} | "
            f"{s['applied']} | {shift} | {conf} |"
        )
    lines += ["", "| tile | modality | dx | dy | confidence | applied | reason |"]
    lines.append("|---|---|---:|---:|---:|---|---|")
    for r in rows:
        nums = [f"{r[k]:.2f}" if isinstance(r[k], int | float) else "–" for k in ("dx", "dy")]
        conf = f"{r['confidence']:.1f}" if isinstance(r["confidence"], int | float) else "–"
        lines.append(
            f"| {r['tile']} | {r['modality']} | {nums[0]} | {nums[1]} | {conf} | "
            f"{'yes' if r['applied'] else 'no'} | {r['reason']} |"
        )
    return [*lines, ""]


def write_report(run_dir: Path, report: Mapping[str, Any], quicklook: Path | None) -> Path:
    """Write ``report.json`` and ``report.md`` atomically; returns the Markdown path."""
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=1, default=str) + "\n")
    md = run_dir / "report.md"
    atomic_write_text(md, render_markdown(report, quicklook.name if quicklook else None))
    return md


def _grid_section(plan: RunPlan, ha: float | None) -> dict[str, Any]:
    grid = plan.grid
    h, w = grid.shape.yx
    crs = grid_crs(grid)
    return {
        "crs": f"EPSG:{crs.epsg}" if crs.epsg else crs.to_wkt(),
        "shape": [h, w],
        "resolution": abs(float(grid.resolution.x)),
        "units": (crs.units[0] if crs.units else ""),
        "transform": list(grid.transform)[:6],
        "area_km2": round(h * w * ha / 100.0, 4) if ha is not None else None,
        "tile_size": plan.tile_size,
        "halo": plan.halo,
    }


def qa_report(
    plan: RunPlan,
    manifest: RunManifest,
    products: Sequence[ProductFile],
    *,
    classes: Sequence[ClassInfo],
    stac_documents: int,
    reused: int = 0,
    notes: Sequence[str] = (),
    recomputed: Mapping[str, Sequence[str]] | None = None,
    input_issues: Sequence[str] = (),
) -> dict[str, Any]:
    """The QA report of an assembled run (``report.json``'s content).

    Args:
        plan: the run.
        manifest: its manifest (tile states, provenance).
        products: the written COGs with their sha256 (``classes`` first; ``confidence`` if any).
        classes: the legend.
        stac_documents: STAC documents written and validated.
        reused: tiles taken over from an earlier attempt.
        notes: lines put before the automatic notes.
        recomputed: why tiles were computed in this attempt -> tile ids.
        input_issues: the run's input problems, one line each.
    """
    files = {p.kind: p for p in products}
    conf = files.get("confidence")
    counts, mean_conf = class_stats(files["classes"].path, conf.path if conf else None)
    ha = pixel_area_ha(plan.grid)
    failed = _failed_tiles(manifest)
    done = sum(1 for t in plan.tasks if manifest.tiles[t.tile_id].state == "done")
    coreg = {tid: rec.coreg for tid, rec in manifest.tiles.items() if rec.coreg}
    return {
        "job": {
            "name": plan.job_name,
            "description": plan.description,
            "config_hash": plan.config_hash,
        },
        "run_id": plan.run_id,
        "run_date": manifest.provenance.get("run_date"),
        "finished": utc_now(),
        "time_window": manifest.provenance.get("time_window"),
        "grid": _grid_section(plan, ha),
        "tiles": {"total": len(plan.tasks), "done": done, "reused": reused, "failed": len(failed)},
        "classes": class_table(counts, classes, plan.grid, mean_conf),
        "nodata_pixels": int(counts[NODATA_CLASS]),
        "failures": failed,
        "products": {Path(p.path).name: p.sha256 for p in products},
        # COGs are validated at write time: write_cog publishes only COGs that validate.
        "validation": {"cog": "passed", "stac": f"passed ({stac_documents} documents)"},
        "resume": {
            "reused": reused,
            "recomputed": {k: list(v) for k, v in (recomputed or {}).items()},
        },
        "inputs": inputs_section(plan, manifest, input_issues),
        "coreg": {"summary": summarize_coreg(coreg), "tiles": coreg_rows(coreg)},
        "provenance": manifest.provenance,
        "notes": [*notes, *auto_notes(plan, manifest.provenance, ha)],
    }


def _failed_tiles(manifest: RunManifest) -> list[dict[str, Any]]:
    return [
        {"tile": tid, "attempts": rec.attempts, "error": rec.error}
        for tid, rec in sorted(manifest.tiles.items())
        if rec.state == "failed"
    ]


def inputs_section(
    plan: RunPlan, manifest: RunManifest, input_issues: Sequence[str]
) -> dict[str, Any]:
    """The truth about the inputs: per run (search, skipped items, totals) and per tile."""
    per_tile = {
        t.tile_id: rec.input_report
        for t in plan.tasks
        if (rec := manifest.tiles.get(t.tile_id)) and rec.state == "done" and rec.input_report
    }
    mapped = sum(r.get("mapped_pixels", 0) for r in per_tile.values())
    partial = sum(r.get("partial_pixels", 0) for r in per_tile.values())
    days: dict[str, set[str]] = {}
    for r in per_tile.values():
        for m, d in r.get("dates_without_clear", {}).items():
            days.setdefault(m, set()).update(d)
    return {
        "strict": plan.strict,
        "search": {m: dict(v) for m, v in plan.search.items()},
        "skipped_items": {m: dict(v) for m, v in plan.skipped_items.items()},
        "checked_tiles": len(per_tile),
        "mapped_pixels": mapped,
        "partial_pixels": partial,
        "partial_share": round(partial / mapped, 6) if mapped else None,
        "dates_without_clear": {m: sorted(d) for m, d in sorted(days.items())},
        "nodata_mismatch": [
            {"tile": tid, **rec}
            for tid, r in per_tile.items()
            for rec in r.get("nodata_mismatch", [])
        ],
        "issues": list(input_issues),
        "per_tile": per_tile,
    }


def auto_notes(plan: RunPlan, prov: Mapping[str, Any], ha: float | None) -> list[str]:
    """Notes every report carries: inputs, model card, tiling, area units, code version."""
    notes = []
    for modality, ids in prov.get("input_items", {}).items():
        shown = ", ".join(ids[:8]) + (f" … (+{len(ids) - 8})" if len(ids) > 8 else "")
        notes.append(f"Inputs {modality}: {len(ids)} item(s): {shown}")
    if prov.get("model_card_sha256"):
        notes.append(
            f"Model card sha256 {prov['model_card_sha256']}, task {prov.get('model_task')}"
        )
    if prov.get("model_device"):
        notes.append(
            f"Model run on {prov['model_device']} ({prov.get('model_device_name')}), precision "
            f"{prov.get('model_precision')}, torch.compile {prov.get('model_compile')}; windows "
            f"of {prov.get('model_window')} px overlapping by {prov.get('model_overlap')} px"
        )
    notes.append(
        f"Tiles of {plan.tile_size} px with a {plan.halo} px halo (predicted on tile + "
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
