"""Progress events of a mapping run (kept free of heavy imports: the CLI subclasses it)."""

from __future__ import annotations

from typing import Any


class ProgressHook:
    """Receives progress events from :func:`run_job` (the CLI shows a rich bar with ETA)."""

    def start(self, total: int, reused: int) -> None:
        """``total`` tiles in the plan, ``reused`` of them already done and verified."""

    def tile_done(self, outcome: Any) -> None:
        """One tile finished (successfully or not)."""

    def phase(self, name: str) -> None:
        """A new phase started: ``search``, ``tiles`` (cluster starting), ``compute`` (cluster up,
        tiles submitted), ``products``."""
