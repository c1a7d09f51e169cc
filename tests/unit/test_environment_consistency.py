"""pyproject.toml and environment.yml must list the same packages with the same version bounds."""

from __future__ import annotations

import re
import tomllib

import yaml

# conda-forge names that differ from the PyPI distribution names
CONDA_TO_PYPI = {"pytorch": "torch", "jupyter_client": "jupyter-client", "python-build": "build"}
NOT_PACKAGES = {"python", "pip", "-e ."}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject(repo_root) -> dict[str, str]:
    data = tomllib.loads((repo_root / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"]["optional-dependencies"].values():
        reqs += extra
    return dict(_split(r) for r in reqs)


def _environment(repo_root) -> dict[str, str]:
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            if entry in NOT_PACKAGES:
                continue
            name, spec = _split(entry)
            if name in NOT_PACKAGES:
                continue
            out[CONDA_TO_PYPI.get(name, name).replace("_", "-")] = spec
    return out


def test_same_packages_and_bounds(repo_root):
    py, env = _pyproject(repo_root), _environment(repo_root)
    assert sorted(set(py) - set(env)) == [], "in pyproject.toml but not environment.yml"
    assert sorted(set(env) - set(py)) == [], "in environment.yml but not pyproject.toml"
    drift = {name: (py[name], env[name]) for name in py if py[name] != env[name]}
    assert drift == {}, f"version bounds differ (pyproject, environment.yml): {drift}"


def test_python_version_matches(repo_root):
    data = tomllib.loads((repo_root / "pyproject.toml").read_text())
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    conda_python = next(
        d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python ")
    )
    assert _split(conda_python)[1] == data["project"]["requires-python"]
