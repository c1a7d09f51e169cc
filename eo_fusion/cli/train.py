"""``eo-fusion train``: a training job from label files over a catalog (registered on ``app``)."""

from __future__ import annotations

from pathlib import Path

import typer

from eo_fusion.cli import app


@app.command("train")
def train_command(
    job_file: Path = typer.Argument(
        ..., help="Training job YAML (labels, catalog, AOI, modalities; see docs/training.md)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Rebuild the chip store instead of resuming it."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Override training.steps."),
    device: str | None = typer.Option(
        None, "--device", help="Override training.device (auto, cpu, cuda, mps)."
    ),
) -> None:
    """Sample chips over labelled fields, build them once, fine-tune a model and score it.

    Chips are drawn per class (capped per field) inside spatial blocks, built with the map job's
    stacking code on dask into OUT/<job>-<hash>/chips.zarr (resumable: chips.json), split by
    blocks so that no field is on both sides, then the model is fine-tuned and scored on the
    held-out blocks: OUT/<job>-<hash>/train-<hash>/ holds model/, report.json, report.md,
    loss.csv and last/ (a rerun resumes from it).
    Run under torchrun for data-parallel training (gloo on CPUs, NCCL on GPUs).

    Example: eo-fusion train pipelines/train_landuse_sample.yaml
    """
    from eo_fusion.train.job import load_train_job
    from eo_fusion.train.runner import run_train_job

    job = load_train_job(job_file)
    updates = {k: v for k, v in (("steps", steps), ("device", device)) if v is not None}
    if updates:
        from eo_fusion.config import parse_spec
        from eo_fusion.train.job import TrainingSpec

        merged = job.training.model_dump() | updates
        training = parse_spec(TrainingSpec, merged, base_dir=job_file.parent, source="--options")
        job = job.model_copy(update={"training": training})
    summary = run_train_job(job, force=force)
    if summary.report is None:  # not rank 0 of a data-parallel run
        return
    val = summary.metrics.get("val")
    chips = ", ".join(f"{k} {v}" for k, v in summary.chips.items())
    typer.echo(f"chips: {chips} ({summary.reused_chips} reused)")
    if val and "map" in val:
        typer.echo(f"val: mAP {100 * (val['map'] or 0):.1f} % over {val['n_samples']} scene(s)")
    elif val:
        typer.echo(
            f"val: OA {100 * val['oa']:.1f} %, mIoU {100 * (val['miou'] or 0):.1f} %, "
            f"macro F1 {100 * (val['f1_macro'] or 0):.1f} %"
        )
    typer.echo(f"model: {summary.model}; report: {summary.report}")
