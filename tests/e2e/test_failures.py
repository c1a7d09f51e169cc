"""Failing tiles: transient errors are retried, others recorded; stop or continue; summary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from _synthetic_job import read_product, synthetic_job

from eo_fusion.errors import LockError
from eo_fusion.pipeline.legend import NODATA_CLASS
from eo_fusion.pipeline.manifest import RunManifest, run_lock
from eo_fusion.pipeline.plan import TileTask, run_id_for
from eo_fusion.pipeline.run import run_job
from eo_fusion.testing.synthetic import SyntheticPredictor


@dataclasses.dataclass(frozen=True)
class FlakyPredictor(SyntheticPredictor):
    """Synthetic predictor that fails on chosen tiles: once (transient) or always."""

    marker_dir: str = ""
    transient: tuple[str, ...] = ()
    broken: tuple[str, ...] = ()

    def predict(self, task: TileTask) -> np.ndarray:
        if task.tile_id in self.broken:
            raise ValueError(f"model exploded on {task.tile_id}")
        marker = Path(self.marker_dir) / task.tile_id
        if task.tile_id in self.transient and not marker.exists():
            marker.touch()
            raise OSError(f"connection reset while reading {task.tile_id}")
        return super().predict(task)


def test_transient_error_is_retried(tmp_path):
    pred = FlakyPredictor(marker_dir=str(tmp_path), transient=("r001_c001",))
    s = run_job(synthetic_job(tmp_path / "out"), predictor=pred, items={})
    assert s.ok and s.tiles_failed == 0
    rec = RunManifest.load(s.run_dir).tiles["r001_c001"]
    assert rec.state == "done" and rec.attempts == 2


def test_permanent_error_is_recorded_and_others_finish(tmp_path):
    pred = FlakyPredictor(marker_dir=str(tmp_path), broken=("r000_c001",))
    s = run_job(synthetic_job(tmp_path / "out"), predictor=pred, items={})
    assert not s.ok and s.tiles_failed == 1 and s.tiles_done == 8
    rec = RunManifest.load(s.run_dir).tiles["r000_c001"]
    assert rec.state == "failed" and rec.attempts == 1  # not transient: no retry
    assert "ValueError: model exploded on r000_c001" in rec.error
    classes = read_product(s)[0]
    assert (classes[0:32, 32:64] == NODATA_CLASS).all()  # the failed tile's window
    assert (classes[32:, :] != NODATA_CLASS).all()
    # Rerunning with the problem fixed computes only the failed tile.
    fixed = run_job(synthetic_job(tmp_path / "out"), predictor=SyntheticPredictor(), items={})
    assert fixed.ok and fixed.tiles_reused == 8


def test_on_failure_stop_writes_no_products(tmp_path):
    job = synthetic_job(tmp_path / "out", wave_size=1).model_copy(update={"on_failure": "stop"})
    pred = FlakyPredictor(marker_dir=str(tmp_path), broken=("r000_c000",))
    s = run_job(job, predictor=pred, items={})
    assert not s.ok and s.tiles_failed == 1 and s.products == {}
    assert RunManifest.load(s.run_dir).counts()["done"] < 8


def test_second_copy_of_a_running_job_is_locked_out(tmp_path):
    from datetime import UTC, datetime

    job = synthetic_job(tmp_path)
    run_dir = tmp_path / run_id_for(job, job.time.resolve(datetime.now(UTC).date()))
    run_dir.mkdir(parents=True)
    with run_lock(run_dir), pytest.raises(LockError, match="locked by PID"):
        run_job(job, predictor=SyntheticPredictor(), items={})
