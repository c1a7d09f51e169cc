"""End-to-end fixtures: a real ``dask scheduler`` + ``dask worker`` processes on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

DASK = Path(sys.executable).with_name("dask")


_LOGS: dict[int, object] = {}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    fh = open(log, "wb")  # noqa: SIM115 - closed in _stop
    proc = subprocess.Popen(
        [str(DASK), *args], stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    _LOGS[proc.pid] = fh
    return proc


def _stop(procs: list[subprocess.Popen]) -> None:
    # Workers hold no state worth a graceful shutdown (which takes seconds): kill them, then
    # stop the scheduler.
    for p in reversed(procs):
        if p.poll() is None:
            p.kill() if p is not procs[0] else p.terminate()
    for p in reversed(procs):
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        fh = _LOGS.pop(p.pid, None)
        if fh is not None:
            fh.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def dask_scheduler(tmp_path_factory) -> str:
    """Address of a real scheduler with two single-threaded workers (random loopback ports)."""
    if not DASK.exists():
        pytest.fail(f"{DASK} not found: install distributed into the test environment")
    tmp = tmp_path_factory.mktemp("dask")
    sched_file = tmp / "scheduler.json"
    procs = [
        _start(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sched_file)],
            tmp / "scheduler.log",
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dask scheduler did not start: {(tmp / 'scheduler.log').read_text()}")
            time.sleep(0.2)
        import json

        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(
                _start(
                    ["worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                     "--nworkers", "1", "--no-dashboard", "--memory-limit", "2GiB",
                     "--name", f"w{i}"],
                    tmp / f"worker{i}.log",
                )
            )  # fmt: skip
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        _stop(procs)


@pytest.fixture(scope="session")
def map_checkpoint() -> str | None:
    """Checkpoint for the real-data map tests: the bundled model (``None``).

    ``EO_FUSION_MAP_TEST_CHECKPOINT`` points them at another checkpoint folder (for developing
    the pipeline while the bundled model is being retrained).
    """
    from eo_fusion.models.checkpoint import BUNDLED_DIR, CARD

    override = os.environ.get("EO_FUSION_MAP_TEST_CHECKPOINT")
    if override:
        return override
    if not (BUNDLED_DIR / CARD).is_file():
        pytest.fail(f"the bundled model is missing ({BUNDLED_DIR / CARD}); run `make model`")
    return None
