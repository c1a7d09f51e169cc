"""Failing tiles: transient errors are retried, others recorded; stop or continue; summary."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _synthetic_job import read_product, synthetic_job

from eo_fusion.errors import JobError, LockError
from eo_fusion.files import StorageError, storage_errors
from eo_fusion.pipeline.legend import NODATA_CLASS
from eo_fusion.pipeline.manifest import MANIFEST_NAME, RunManifest, run_lock
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


# -- run folders that recover -------------------------------------------------------------------


def _quick(out: Path, **kw):
    return synthetic_job(out, processes=False, **kw)


def test_corrupt_manifest_reset_keeps_verified_tiles(tmp_path):
    pred, out = SyntheticPredictor(), tmp_path / "out"
    full = run_job(_quick(out), predictor=pred, items={})
    pixels = read_product(full)
    (full.run_dir / MANIFEST_NAME).write_text('{"run_id": ')  # torn by hand
    tile = full.run_dir / "tiles" / "r001_c001.tif"
    tile.write_bytes(tile.read_bytes()[:-7] + b"garbage")  # and one tile no longer verifies
    with pytest.raises(JobError, match=r"manifest\.json.*--reset"):
        run_job(_quick(out), predictor=pred, items={})
    s = run_job(_quick(out), predictor=pred, items={}, reset=True)
    assert s.ok and s.tiles_reused == 8
    assert s.recomputed == {"output missing or its checksum does not match": ["r001_c001"]}
    (aside,) = full.run_dir.glob(f"{MANIFEST_NAME}.corrupt-*")
    assert aside.read_text() == '{"run_id": '  # kept for inspection, not deleted
    np.testing.assert_array_equal(read_product(s), pixels)
    # --force also gets past a corrupt manifest (and recomputes everything).
    (full.run_dir / MANIFEST_NAME).write_text("[]")
    forced = run_job(_quick(out), predictor=pred, items={}, force=True)
    assert forced.ok and forced.tiles_reused == 0
    np.testing.assert_array_equal(read_product(forced), pixels)


def test_stale_temporaries_are_removed_at_start(tmp_path):
    pred, out = SyntheticPredictor(), tmp_path / "out"
    s = run_job(_quick(out), predictor=pred, items={})
    stale = [
        s.run_dir / f".{MANIFEST_NAME}.k1l2m3.partial.tmp",
        s.run_dir / "tiles" / ".r000_c000.tif.a8b9c0.partial.tmp.tif",
        s.run_dir / f".{s.run_id.split('-')[0]}_classes.mosaic.partial.tif",
        s.run_dir / "tiles" / ".r000_c001.tif.zz.tmp.tif",  # named by an earlier version
    ]
    for p in stale:
        p.write_bytes(b"half-written")
    keep = s.run_dir / "tiles" / "notes.txt"
    keep.write_text("mine")
    again = run_job(_quick(out), predictor=pred, items={})
    assert again.ok and again.tiles_reused == 9
    assert not any(p.exists() for p in stale) and keep.exists()


def test_no_tile_succeeded_publishes_nothing_and_exits_1(tmp_path):
    from eo_fusion.cli.mapping import _failure

    every = tuple(f"r{r:03d}_c{c:03d}" for r in range(3) for c in range(3))
    pred = FlakyPredictor(marker_dir=str(tmp_path), broken=every)
    s = run_job(_quick(tmp_path / "out"), predictor=pred, items={})
    assert not s.ok and s.tiles_done == 0 and s.products == {} and s.stac == []
    assert "no tile succeeded" in s.problem
    assert not any(s.run_dir.glob("*.tif")) and not (s.run_dir / "stac").exists()
    err = _failure("synthetic", s)
    assert err.exit_code == 1 and "9 of 9 tile(s) failed" in str(err)


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs (needs root and mount(2)); skipped where the machine does not allow it."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full-disk test needs a small tmpfs: mounting needs root here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@dataclasses.dataclass(frozen=True)
class DiskFillingPredictor(SyntheticPredictor):
    """Fills the file system of ``filler`` on its first tile (another program taking the disk)."""

    filler: str = ""

    def predict(self, task: TileTask) -> np.ndarray:
        path = Path(self.filler)
        if not path.exists():
            with open(path, "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            with contextlib.suppress(OSError), open(path, "ab") as f:  # the last bytes
                while True:
                    f.write(b"\0" * 512)
                    f.flush()
        return super().predict(task)


def test_full_disk_is_named_stops_the_run_and_resumes(tmp_path, tmpfs):
    pred = SyntheticPredictor()
    want = read_product(run_job(_quick(tmp_path / "ref"), predictor=pred, items={}))
    filler = tmpfs / "filler.bin"
    # The first tile fills the disk: its file cannot be written (a fatal outcome: no more tiles
    # are submitted), nor can the manifest that records it, so the run stops with the error.
    with pytest.raises(StorageError, match="no space left on device") as info:
        run_job(_quick(tmpfs / "out", wave_size=1), items={},
                predictor=DiskFillingPredictor(filler=str(filler)))  # fmt: skip
    msg = str(info.value)
    assert str(tmpfs / "out") in msg and re.search(r"about \d+\.\d MiB needed", msg)
    (run_dir,) = (tmpfs / "out").iterdir()
    assert not any(run_dir.glob("*_classes.tif")) and not (run_dir / "stac").exists()
    assert not (run_dir / "tiles").exists() or len(list((run_dir / "tiles").glob("*.tif"))) < 9
    filler.unlink()  # space freed: the same command finishes the run
    again = run_job(_quick(tmpfs / "out"), predictor=pred, items={})
    assert again.ok
    np.testing.assert_array_equal(read_product(again), want)


def test_read_only_output_is_named(tmp_path, tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(StorageError, match=r"cannot write .*tmpfs.*read-only"):
        run_job(_quick(tmpfs / "out"), predictor=SyntheticPredictor(), items={})


@dataclasses.dataclass(frozen=True)
class UnwritablePredictor(SyntheticPredictor):
    """Raises what writing a tile raises when its folder is not writable (on one tile)."""

    on: str = "r000_c000"

    def predict(self, task: TileTask) -> np.ndarray:
        if task.tile_id == self.on:
            with storage_errors(Path("/run/tiles") / f"{task.tile_id}.tif", 2**20):
                raise OSError(errno.EACCES, "Permission denied", f"/run/tiles/{task.tile_id}.tif")
        return super().predict(task)


def test_unwritable_tile_stops_the_run_even_with_on_failure_continue(tmp_path):
    s = run_job(_quick(tmp_path / "out", wave_size=1), predictor=UnwritablePredictor(), items={})
    assert not s.ok and s.products == {} and s.tiles_failed == 1
    assert s.tiles_done == 0  # one tile in flight (wave_size 1): the others never submitted
    rec = RunManifest.load(s.run_dir).tiles["r000_c000"]
    assert rec.attempts == 1 and "permission denied" in rec.error  # not retried
    assert "cannot be written" in s.problem and "/run/tiles/r000_c000.tif" in s.problem


def test_truncated_search_is_reported_and_fatal_with_strict(tmp_path, monkeypatch):
    import eo_fusion.pipeline.run as run_mod

    def truncated_search(job, area, info, **_):  # what search_job records when the page cap hits
        info["s2-l2a"] = {"items": 500, "pages": 5, "truncated": True, "unplaced": {}}
        return {}

    monkeypatch.setattr(run_mod, "search_job", truncated_search)
    s = run_job(_quick(tmp_path / "lenient"), predictor=SyntheticPredictor())
    assert s.ok and s.input_issues == [
        "s2-l2a: the search was truncated by the page cap after 5 page(s) (500 item(s) kept; "
        "the catalog holds more)"
    ]
    report = json.loads((s.run_dir / "report.json").read_text())
    assert report["inputs"]["search"]["s2-l2a"]["truncated"] is True
    assert "truncated by the page cap" in (s.run_dir / "report.md").read_text()
    (item_json,) = (s.run_dir / "stac").glob("*-classes/*.json")
    assert json.loads(item_json.read_text())["properties"]["eo_fusion:input_issues"] == (
        s.input_issues
    )
    with pytest.raises(JobError, match=r"\(strict\): 1 input problem.*truncated") as info:
        run_job(_quick(tmp_path / "strict", strict=True), predictor=SyntheticPredictor())
    assert "strict: false" in str(info.value)
    assert not (tmp_path / "strict").exists()  # refused before the run folder or a cluster
