"""Resumable runs: SIGKILL part-way, then resume, gives the pixels of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _synthetic_job import read_product, synthetic_job

from eo_fusion.pipeline.manifest import LOCK_NAME, MANIFEST_NAME, RunManifest, read_lock
from eo_fusion.pipeline.run import run_job
from eo_fusion.testing.synthetic import SyntheticPredictor

HERE = Path(__file__).resolve().parent


def _kill_part_way(out: Path, min_done: int) -> Path:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_synthetic_job.py"), str(out), "0.4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            manifests = list(out.glob(f"*/{MANIFEST_NAME}"))
            if manifests:
                try:
                    done = RunManifest.load(manifests[0].parent).counts()["done"]
                except Exception:  # being replaced right now: atomic, so just read again
                    done = 0
                if done >= min_done:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    return manifests[0].parent
            assert proc.poll() is None, "the job ended before it could be killed"
            time.sleep(0.05)
        raise AssertionError("the job did not finish tiles in time")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    pred = SyntheticPredictor()
    full = run_job(synthetic_job(tmp_path / "full"), predictor=pred, items={})
    assert full.ok, [f.traceback for f in full.failures]

    out = tmp_path / "killed"
    run_dir = _kill_part_way(out, min_done=3)
    before = RunManifest.load(run_dir)
    assert 3 <= before.counts()["done"] < 9
    assert read_lock(run_dir / LOCK_NAME) is not None  # left behind by the killed process
    assert not any(run_dir.glob("*_classes.tif"))

    # Corrupt one finished tile: the resume must recompute it, not trust the file.
    done = sorted(t for t, r in before.tiles.items() if r.state == "done")
    (run_dir / before.tiles[done[0]].output).write_bytes(b"garbage")

    resumed = run_job(synthetic_job(out, wave_size=1), predictor=pred, items={})
    assert resumed.run_dir == run_dir and resumed.ok
    assert resumed.tiles_reused == len(done) - 1
    np.testing.assert_array_equal(read_product(resumed), read_product(full))
    np.testing.assert_array_equal(
        read_product(resumed, "confidence"), read_product(full, "confidence")
    )
    assert not (run_dir / LOCK_NAME).exists()

    # A second rerun reuses everything; --force recomputes everything.
    again = run_job(synthetic_job(out, wave_size=1), predictor=pred, items={})
    assert again.tiles_reused == 9
    forced = run_job(synthetic_job(out, wave_size=1), predictor=pred, items={}, force=True)
    assert forced.tiles_reused == 0 and forced.tiles_done == 9
    np.testing.assert_array_equal(read_product(forced), read_product(full))


def test_changed_config_starts_a_new_run(tmp_path):
    pred = SyntheticPredictor()
    a = run_job(synthetic_job(tmp_path, halo=4), predictor=pred, items={})
    b = run_job(synthetic_job(tmp_path, halo=5), predictor=pred, items={})
    assert a.run_dir != b.run_dir and b.tiles_reused == 0
    assert (
        json.loads((a.run_dir / MANIFEST_NAME).read_text())["config_hash"]
        != json.loads((b.run_dir / MANIFEST_NAME).read_text())["config_hash"]
    )
