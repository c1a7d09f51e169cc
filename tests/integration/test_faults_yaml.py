"""YAML guards: alias bombs, recursive aliases and deep nesting are refused before anything
walks the document; every shipped YAML file still loads exactly as ``yaml.safe_load`` reads it."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
import yaml

from eo_fusion.config import load_yaml
from eo_fusion.errors import EXIT_BAD_INPUT, ConfigError
from eo_fusion.yaml_guard import load_yaml_text

REPO = Path(__file__).resolve().parents[2]


def _bomb() -> str:
    """The classic "billion laughs": 9 levels of 9 aliases = 9**9 leaves, padded to 771 bytes."""
    lines = ['lol1: &lol1 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(2, 10):
        refs = ", ".join([f"*lol{i - 1}"] * 9)
        lines.append(f"lol{i}: &lol{i} [{refs}]")
    text = "\n".join(lines) + "\n"
    return text + "#" * (770 - len(text)) + "\n"


def test_billion_laughs_refused_fast(tmp_path):
    text = _bomb()
    assert len(text.encode()) == 771
    path = tmp_path / "job.yaml"
    path.write_text(text)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="alias/anchor bomb") as err:
        load_yaml(path)
    assert time.monotonic() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 50_000  # kB
    assert str(path) in str(err.value) and err.value.exit_code == EXIT_BAD_INPUT


def test_cli_exits_2_on_a_bomb(tmp_path, capsys):
    from eo_fusion.cli import main

    path = tmp_path / "job.yaml"
    path.write_text(_bomb())
    assert main(["map", str(path)]) == EXIT_BAD_INPUT
    assert "YAML refused" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a: &a [*a]\n", "recursive"),
        ("a: &a {b: *a}\n", "recursive"),
        ("a: " + "[" * 200 + "]" * 200 + "\n", "deeper than"),
        ("".join(f"k{i}: &x{i} 1\n" for i in range(1200)) + "v: [" + ", ".join(
            f"*x{i}" for i in range(1200)) + "]\n", "aliases"),
    ],
)  # fmt: skip
def test_other_yaml_bombs(text, why):
    with pytest.raises(ConfigError, match=why):
        load_yaml_text(text, source="t.yaml")


def test_moderate_anchors_still_work():
    text = "base: &b {x: 1, y: [1, 2]}\nm: {<<: *b, z: 3}\nl: [*b, *b]\n"
    assert load_yaml_text(text, source="t.yaml") == yaml.safe_load(text)


def test_every_shipped_yaml_loads_unchanged():
    files = sorted([*REPO.glob("pipelines/*.yaml"), *REPO.glob("catalogs/*.yaml")])
    assert len(files) >= 10
    for f in files:
        text = f.read_text()
        assert load_yaml_text(text, source=str(f)) == yaml.safe_load(text), f
