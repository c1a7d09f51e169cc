"""``eo-fusion evaluate``: repeated spatial block cross-validation of the models."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from eo_fusion.cli import app


@app.command()
def evaluate(
    config: Path = typer.Argument(..., help="evaluation YAML (see pipelines/evaluate_sample.yaml)"),
    quick: bool = typer.Option(False, "--quick", help="Tiny settings (tests): profile `quick`."),
    profile: str | None = typer.Option(
        None, "--profile", help="Apply the named profile of the config (e.g. `medium`)."
    ),
    docs: Path | None = typer.Option(
        None, "--docs", help="Also regenerate the Evaluation section of this page (docs/model.md)."
    ),
    quiet: bool = typer.Option(False, "--no-progress", help="No per-split lines."),
) -> None:
    """Cross-validate our model, Galileo, Presto, a random forest and linear probes on the
    labelled scenes (spatial blocks × folds × seeds; pretraining sees training pixels only).

    Prints OA, mIoU and macro F1 as mean ± 95 % interval per row; writes <out>/evaluation.json
    (every split's scores and confusion matrices) and <out>/evaluation.md.

    Example: eo-fusion evaluate pipelines/evaluate_sample.yaml --quick
    """
    from eo_fusion.errors import BadInputError
    from eo_fusion.evaluate import report
    from eo_fusion.evaluate.config import load_evaluate_spec
    from eo_fusion.evaluate.run import run_evaluation
    from eo_fusion.train.sources import load_scenes

    if quick and profile is not None and profile != "quick":
        raise BadInputError("--quick and --profile name two profiles", fix="give one of them")
    spec = load_evaluate_spec(config, "quick" if quick else profile)
    scenes = load_scenes(spec.data, progress=not quiet)
    latlon = {s.name: _centre_latlon(s.bbox, s.crs) for s in spec.data.scenes}

    def show(rec: dict) -> None:
        if not quiet:
            oa = ", ".join(f"{r} {100 * v['oa']:.1f}" for r, v in rec["rows"].items() if v["oa"])
            typer.echo(f"seed {rec['seed']} fold {rec['fold']}: OA {oa}")

    results = run_evaluation(spec, scenes, latlon, on_split=show)
    command = "eo-fusion evaluate " + " ".join(
        [shlex.quote(_shown(config))]
        + (["--quick"] if quick else [])
        + ([f"--profile {profile}"] if profile else [])
    )
    jpath, mpath = report.write(results, spec, command)
    typer.echo("\n".join(report.table(results)))
    typer.echo("")
    typer.echo("\n".join(report.differences_text(results)))
    if docs is not None:
        report.update_docs(docs, results, spec, command)
        typer.echo(f"updated the Evaluation section of {docs}")
    typer.echo(f"results written to {jpath} and {mpath}")


def _shown(path: Path) -> str:
    """The config path as the user would retype it (relative to the working folder if inside)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _centre_latlon(bbox: tuple[float, float, float, float], crs: str) -> tuple[float, float]:
    """Latitude and longitude (degrees) of a bbox's centre (Presto's location input)."""
    from pyproj import Transformer

    t = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = t.transform((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    return float(lat), float(lon)
