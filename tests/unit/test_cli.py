"""The CLI contract: --version, --help for every command, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eo_fusion import __version__
from eo_fusion.cli import app, main


def _command_paths() -> list[list[str]]:
    import typer.main

    from eo_fusion.cli import _register_commands

    _register_commands()
    root = typer.main.get_command(app)
    paths = []

    def walk(cmd, prefix):
        sub = getattr(cmd, "commands", None)
        if sub:
            for name, child in sub.items():
                walk(child, [*prefix, name])
        elif prefix:
            paths.append(prefix)

    walk(root, [])
    return paths


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_top_level_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for path in _command_paths():
        assert path[0] in out


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out, f"`eo-fusion {' '.join(path)} --help` should show an example"


def test_unknown_command_is_usage_error():
    assert main(["no-such-command"]) == 2


def test_console_script_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "eo_fusion", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and __version__ in proc.stdout


@pytest.mark.parametrize("command", ["map", "stack"])
def test_misspelt_job_key_exits_2_naming_the_key_on_one_line(command, tmp_path, repo_root):
    job = (repo_root / "pipelines" / "sample_landcover.yaml").read_text()
    bad = tmp_path / "job.yaml"
    bad.write_text(job.replace("max_cloud:", "max_clouds:"))
    args = [command, str(bad)] + (["--out", str(tmp_path / "s.zarr")] if command == "stack" else [])
    proc = subprocess.run(
        [sys.executable, "-m", "eo_fusion", *args],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "COLUMNS": "60"},
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "modalities.s2-l1c.max_clouds" in lines[0] and "did you mean 'max_cloud'" in lines[0]


_MODALITY_MISTAKES = {
    # a misspelt option: named, with "did you mean" and the modality's valid options
    "misspelt": (
        ("  dem: {}\n", "  dem: {}\n  s1-grd:\n    options: {speckel: lee}\n"),
        ["modalities.s1-grd.options.speckel", "did you mean 'speckle'", "valid options for s1-grd"],
    ),
    # an option of another modality
    "speckle-on-s2": (
        ("    mode: composite\n", "    mode: composite\n    options: {speckle: lee}\n"),
        [
            "modalities.s2-l1c.options.speckle",
            "does not apply to s2-l1c",
            "s1-grd",
            "cloud_threshold",
        ],
    ),
    # a key that its mode does not use
    "aggregate-on-composite": (
        ("    mode: composite\n", "    mode: composite\n    aggregate: monthly\n"),
        ["modalities.s2-l1c.aggregate", "needs mode: timeseries", "valid keys here"],
    ),
}


@pytest.mark.parametrize("mistake", sorted(_MODALITY_MISTAKES))
@pytest.mark.parametrize("command", ["map", "stack"])
def test_bad_modality_option_exits_2_naming_it(command, mistake, tmp_path, repo_root):
    (old, new), expected = _MODALITY_MISTAKES[mistake]
    job = (repo_root / "pipelines" / "sample_landcover.yaml").read_text()
    assert old in job
    bad = tmp_path / "job.yaml"
    bad.write_text(job.replace(old, new, 1))
    args = [command, str(bad)] + (["--out", str(tmp_path / "s.zarr")] if command == "stack" else [])
    proc = subprocess.run(
        [sys.executable, "-m", "eo_fusion", *args],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert not (tmp_path / "s.zarr").exists()
