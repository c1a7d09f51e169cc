"""The training report: ``report.json`` and a readable ``report.md`` in the run folder.

Same shape as the map job's QA report (a JSON record plus a Markdown page written atomically):
the job, the chip store (chips per split and class, fields per split, dropped label codes), the
metrics of every held-out split (OA, mIoU, macro F1, per class IoU and F1, confusion matrix;
for the parcel task counted per field) and how the training ran (device, precision, processes,
throughput).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eo_fusion.files import atomic_write_text
from eo_fusion.train.chips import ChipManifest
from eo_fusion.train.job import TrainJobSpec


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _class_section(split: str, m: Mapping[str, Any], r: Mapping[str, Any]) -> list[str]:
    unit = "fields" if r["training"]["trained_as"] == "parcel" else "pixels"
    lines = [
        f"## {split} ({m['n_pixels']} {unit})",
        "",
        f"OA {_pct(m['oa'])} %, mIoU {_pct(m['miou'])} %, macro F1 {_pct(m['f1_macro'])} %",
        "",
        "| class | name | IoU % | F1 % | reference |",
        "|---:|---|---:|---:|---:|",
    ]
    for c in r["classes"]:
        pc = m["per_class"].get(str(c["id"]), {})
        lines.append(
            f"| {c['id']} | {c['name']} | {_pct(pc.get('iou'))} | "
            f"{_pct(pc.get('f1'))} | {pc.get('n_ref', 0)} |"
        )
    return [*lines, ""]


def _scene_section(split: str, m: Mapping[str, Any]) -> list[str]:
    lines = [
        f"## {split} ({m['n_samples']} scenes)",
        "",
        f"mAP {_pct(m['map'])} %, micro AP {_pct(m['ap_micro'])} %, F1 at 0.5: macro "
        f"{_pct(m['f1_macro'])} %, micro {_pct(m['f1_micro'])} %",
        "",
        "| class | AP % | F1 % | positives |",
        "|---|---:|---:|---:|",
    ]
    for name, pc in m["per_class"].items():
        lines.append(f"| {name} | {_pct(pc['ap'])} | {_pct(pc['f1'])} | {pc['n_ref']} |")
    return [*lines, ""]


def render_markdown(r: Mapping[str, Any]) -> str:
    """The human-readable report page."""
    lines = [f"# Training report: {r['job']['name']}", ""]
    if r["job"].get("description"):
        lines += [r["job"]["description"], ""]
    tr = r["training"]
    lines += [
        f"* Training folder: `{r['train_dir']}` (chips: `{r['run_dir']}`)",
        f"* Finished: {r['finished']}",
        f"* Task: {tr['trained_as']}; chips: "
        + ", ".join(f"{k} {v}" for k, v in r["chips"].items()),
        "* Fields (scene jobs: spatial groups) per split: "
        + ", ".join(f"{k} {v}" for k, v in r["fields"].items()),
        f"* Device: {tr.get('name')} ({tr.get('device')}), precision {tr.get('precision')}, "
        f"{tr.get('processes')} process(es), {tr.get('samples_per_s')} samples/s, "
        f"{tr.get('seconds')} s",
        f"* Dropped label codes: {r['dropped'] or 'none'}",
        "",
    ]
    for split, m in r["metrics"].items():
        lines += _scene_section(split, m) if "map" in m else _class_section(split, m, r)
    lines += ["## Notes", ""] + [f"* {n}" for n in r.get("notes", [])]
    return "\n".join(lines) + "\n"


def write_train_report(
    out: Path,
    job: TrainJobSpec,
    plan_counts: Mapping[str, Any],
    manifest: ChipManifest,
    metrics: Mapping[str, Any],
    card: Mapping[str, Any],
    *,
    finished: str,
) -> Path:
    """Write ``report.json`` and ``report.md``; returns the Markdown path."""
    head = next(iter(card["tasks"].values()))
    states: dict[str, int] = {}
    for rec in manifest.chips.values():
        states[rec.state] = states.get(rec.state, 0) + 1
    report = {
        "job": {"name": job.name, "description": job.description},
        "run_dir": str(out.parent),
        "train_dir": str(out),
        "finished": finished,
        "chips": {s: len(manifest.usable(s)) for s in ("train", "val", "test")},
        "chip_states": states,
        "planned": plan_counts,
        "fields": plan_counts["fields"],
        "dropped": manifest.dropped,
        "classes": [{"id": c["id"], "name": c["name"]} for c in manifest.classes],
        "metrics": dict(metrics),
        "training": head["training"] | {"job": None},
        "model": str(out / "model"),
        "notes": [
            "Metrics are computed on chips of held-out spatial blocks only; no field has "
            "labelled pixels on both sides of the split.",
            "Chips with less than half of their pixels valid in every input are not used "
            f"({states.get('empty', 0)} such chips).",
        ],
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=str) + "\n")
    md = out / "report.md"
    atomic_write_text(md, render_markdown(report))
    return md
