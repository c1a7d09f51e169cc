"""Generate the reference docs from the code: ``docs/configuration.md`` and ``docs/cli.md``.

Run ``make docs`` (``python -m tools.docs_gen`` from the repository root) after changing a spec
or a command; ``tests/unit/test_docs_current.py`` fails when the committed pages are out of date.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

#: The repository this maintainer script belongs to (it is not part of the installed package).
REPO = Path(__file__).resolve().parents[1]

#: (title, import path) of every spec documented in docs/configuration.md, in reading order.
SPEC_MODULES: list[tuple[str, str]] = [
    ("Job files (`eo-fusion map`, `eo-fusion stack`)", "eo_fusion.config:JobSpec"),
    ("Catalog definitions (`catalogs/*.yaml`)", "eo_fusion.catalogs.providers:CatalogSpec"),
    ("Pretraining (`eo-fusion pretrain`)", "eo_fusion.models.config:PretrainSpec"),
    ("Fine-tuning (`eo-fusion finetune`)", "eo_fusion.models.config:FinetuneSpec"),
    ("Training jobs (`eo-fusion train`)", "eo_fusion.train.job:TrainJobSpec"),
    ("Embedding jobs (`eo-fusion embed`)", "eo_fusion.embed:EmbedJobSpec"),
    ("Evaluation (`eo-fusion evaluate`)", "eo_fusion.evaluate.config:EvaluateSpec"),
]


def _load(ref: str) -> type[BaseModel] | None:
    module, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _type_name(annotation: Any) -> str:
    """Readable type: ``str | None``, ``'stop' | 'continue'``, ``dict[str, ModalitySpec]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _nested_models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _nested_models(arg)


def _model_table(model: type[BaseModel], prefix: str, seen: set[type]) -> list[str]:
    lines = [f"### `{prefix or model.__name__}`", "", (model.__doc__ or "").strip(), ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    children: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        if field.is_required():
            default = "**required**"
        elif field.default_factory is not None:
            default = "(see below)" if list(_nested_models(field.annotation)) else "`{}`/`[]`"
        else:
            default = f"`{field.default!r}`"
        desc = (field.description or "").replace("|", "\\|")
        type_name = _type_name(field.annotation).replace("|", "\\|")
        lines.append(f"| `{name}` | `{type_name}` | {default} | {desc} |")
        for child in _nested_models(field.annotation):
            if child not in seen and child.model_fields:  # (a base without fields: no table)
                seen.add(child)
                key = f"{prefix}.{name}" if prefix else name
                origin = getattr(field.annotation, "__origin__", None)
                children.append((f"{key}.<name>" if origin is dict else key, child))
    lines.append("")
    for key, child in children:
        lines += _model_table(child, key, seen)
    return lines


def configuration_markdown() -> str:
    """Markdown reference of every option of every spec."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the pydantic specs by `make docs`; do not edit by hand.",
        "",
        "All files are YAML read with `safe_load`. Unknown keys are rejected with a message naming",
        "the key and listing the valid ones. Relative paths are resolved against the folder of the",
        "file that contains them.",
        "",
    ]
    for title, ref in SPEC_MODULES:
        model = _load(ref)
        if model is None:
            continue
        out += [f"## {title}", ""]
        out += _model_table(model, "", {model})
    out += _modality_options()
    return "\n".join(out).rstrip() + "\n"


def _modality_options() -> list[str]:
    """The modality registry: what applies to each modality, and each family's options."""
    from eo_fusion.modalities import REGISTRY

    out = [
        "## Modality options (`modalities.<name>.options`)",
        "",
        "From the modality registry (`eo_fusion/modalities.py`). A job is refused (exit 2) when it",
        "names an unknown modality, sets `mode`/`aggregate`/`max_cloud` where the modality's",
        "reader does not implement them, or sets an option that is unknown or belongs to another",
        "modality; the message names the key and lists the valid ones.",
        "",
        "| family | modalities | co-registration | modes | aggregate | max_cloud | options |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in REGISTRY:
        names = ", ".join(f"`{n}`" for n in d.names)
        opts = f"`{d.options.__name__}`" if d.options.model_fields else "none"
        yes = {True: "yes", False: "no"}
        out.append(
            f"| {d.family} | {names} | {d.coreg_role} | {', '.join(d.modes)} "
            f"| {yes[d.aggregates]} | {yes[d.cloud_cover]} | {opts} |"
        )
    out.append("")
    seen: set[type] = set()
    for d in REGISTRY:
        if d.options in seen or not d.options.model_fields:
            continue
        seen.add(d.options)
        out += _model_table(d.options, d.options.__name__, seen)
        only = [
            f"`{k}` ({', '.join(d.options.only_for(k))})"
            for k in d.options.model_fields
            if d.options.only_for(k)
        ]
        if only:
            out += [f"Only for some modalities: {', '.join(only)}.", ""]
    return out


def cli_markdown() -> str:
    """Markdown reference of every CLI command, from the commands' own help."""
    import typer.main

    from eo_fusion.cli import _register_commands, app

    _register_commands()
    root = typer.main.get_command(app)
    out = ["# CLI reference", "", "Generated from `eo-fusion --help` by `make docs`.", ""]

    def walk(cmd: Any, path: list[str]) -> None:
        out.extend(
            [f"## `{' '.join(['eo-fusion', *path])}`", "", "```text", _help_text(path), "```"]
        )
        out.append("")
        for name, child in sorted((getattr(cmd, "commands", None) or {}).items()):
            walk(child, [*path, name])

    walk(root, [])
    return "\n".join(out).rstrip() + "\n"


def _help_text(path: list[str]) -> str:
    """The command's ``--help`` as plain text at a fixed width (stable across terminals)."""
    import os
    import subprocess

    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run(
        [sys.executable, "-m", "eo_fusion", *path, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return "\n".join(line.rstrip() for line in proc.stdout.strip("\n").splitlines())


def render_all() -> dict[Path, str]:
    """Every generated page, keyed by its path in the repository."""
    docs = REPO / "docs"
    return {
        docs / "configuration.md": configuration_markdown(),
        docs / "cli.md": cli_markdown(),
    }


def main() -> int:
    for path, text in render_all().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
