"""CLI commands for this area (registered on :data:`eo_fusion.cli.app` at import)."""

from __future__ import annotations
