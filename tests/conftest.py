"""Shared fixtures.

Tests never reach the internet: pytest-socket (``--allow-hosts`` in pyproject.toml) refuses every
connection that is not to loopback, and GDAL is told not to probe remote hosts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "catalogs" / "sample"

# GDAL reads through libcurl, which pytest-socket cannot see: keep it off the network and quiet.
os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
os.environ.setdefault("GDAL_HTTP_TIMEOUT", "10")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR
