"""Shared fixtures.

Tests never reach the internet: pytest-socket (``--allow-hosts`` in pyproject.toml) refuses every
connection that is not to loopback, and GDAL is told not to probe remote hosts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Verbosity, settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "catalogs" / "sample"

# GDAL reads through libcurl, which pytest-socket cannot see: keep it off the network and quiet.
os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
os.environ.setdefault("GDAL_HTTP_TIMEOUT", "10")
os.environ.setdefault("MPLBACKEND", "Agg")

# Property tests (tests/unit/test_properties.py). "ci" (the default) is derandomized: the same
# examples on every run and machine, so a red CI is reproducible and a green one is not luck.
# No deadline: GDAL calls under hypothesis's tracer (Python 3.11) vary a lot with load; the
# pytest timeout still bounds a run. "dev" explores new random examples (HYPOTHESIS_PROFILE=dev,
# with --hypothesis-seed=N to replay one); "debug" prints every example.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.register_profile("debug", parent=settings.get_profile("dev"), verbosity=Verbosity.verbose)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR
