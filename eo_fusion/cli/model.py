"""``eo-fusion pretrain``, ``eo-fusion finetune``, ``eo-fusion model info`` and ``model list``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eo_fusion.cli import app

model_app = typer.Typer(help="Inspect models (checkpoint folders or the bundled model).")
app.add_typer(model_app, name="model")


@app.command()
def pretrain(
    config: Path = typer.Argument(
        ..., help="pretraining YAML (see pipelines/pretrain_sample.yaml)"
    ),
    quiet: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Self-supervised MAE pretraining of the spectral ViT on the stacks a config lists.

    Writes <out>/model (safetensors + model_card.json), <out>/last (resumable checkpoint;
    rerunning the same config resumes), <out>/loss.csv and <out>/loss.png.

    Example: eo-fusion pretrain pipelines/pretrain_sample.yaml
    """
    from eo_fusion.models.config import load_pretrain_spec
    from eo_fusion.train.pretrain import pretrain as run_pretrain
    from eo_fusion.train.sources import load_scenes

    spec = load_pretrain_spec(config)
    scenes = load_scenes(spec.data, progress=not quiet)
    run_pretrain(spec, scenes, progress=not quiet)
    typer.echo(f"pretrained model written to {Path(spec.out) / 'model'}")


@app.command()
def finetune(
    config: Path = typer.Argument(..., help="fine-tuning YAML (see pipelines/finetune_*.yaml)"),
    quiet: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Fine-tune a land-cover or crop head; prints the spatial hold-out OA / mIoU.

    Example: eo-fusion finetune pipelines/finetune_landcover_sample.yaml
    """
    from eo_fusion.models.checkpoint import load, save
    from eo_fusion.models.config import load_finetune_spec
    from eo_fusion.train.finetune import describe
    from eo_fusion.train.finetune import finetune as run_finetune
    from eo_fusion.train.sources import load_scenes

    spec = load_finetune_spec(config)
    base = load(spec.pretrained) if spec.pretrained else None
    scenes = load_scenes(spec.data, progress=not quiet)
    model = run_finetune(spec, scenes, base, progress=not quiet)
    save(model, Path(spec.out))
    metrics = model.card.task(spec.task).metrics["holdout"]
    typer.echo(f"{spec.task} hold-out: {describe(metrics)}; model written to {spec.out}")


@model_app.command("info")
def info(
    path: Path | None = typer.Argument(None, help="checkpoint folder (default: bundled model)"),
    as_json: bool = typer.Option(False, "--json", help="Print the whole model card as JSON."),
) -> None:
    """Show a model's architecture, inputs, classes and hold-out metrics.

    Example: eo-fusion model info
    """
    from eo_fusion.models.checkpoint import load

    m = load(path)
    card = m.card
    if as_json:
        typer.echo(card.to_json().rstrip("\n"))
        return
    enc = card.encoder
    typer.echo(f"model: {card.name}  ({m.path})")
    typer.echo(
        f"encoder: ViT-{enc.size}, patch {enc.patch_size} px, window "
        f"{card.window} px, ranges: {', '.join(enc.ranges)}"
    )
    if (w := card.weights) is not None:
        typer.echo(f"weights: {w.n_parameters:,} values, {w.dtype}, sha256 {w.sha256[:16]}…")
    for task, sec in card.tasks.items():
        typer.echo(f"task {task} ({sec.mode}):")
        for mod, keys in sec.inputs.items():
            typer.echo(f"  input {mod}: {', '.join(keys)}")
        names = ", ".join(f"{c.id}={c.name}" for c in sec.classes)
        typer.echo(f"  classes: {names}")
        hold = sec.metrics.get("holdout")
        if hold:
            typer.echo(f"  hold-out: OA {hold['oa']:.3f}, mIoU {hold['miou']:.3f}")


@model_app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List every encoder eo-fusion can use: inputs, size, licence and citation.

    The bundled eo-fusion model and the published Galileo-nano and Presto encoders are shipped
    with the package (no download); SMARTIES checkpoints are imported on demand.

    Example: eo-fusion model list
    """
    from dataclasses import asdict

    from eo_fusion.models.encoders import available_encoders

    infos = available_encoders()
    if as_json:
        typer.echo(json.dumps([asdict(i) for i in infos], indent=2))
        return
    for i in infos:
        size = f"{i.n_parameters:,} parameters" if i.n_parameters else "read from the checkpoint"
        typer.echo(f"{i.name}: {i.title}")
        typer.echo(f"  inputs:   {i.inputs}")
        typer.echo(f"  size:     {size}")
        typer.echo(f"  licence:  {i.license}")
        typer.echo(f"  citation: {i.citation}")
        typer.echo(f"  source:   {i.source}")
