"""Run manifest (atomic, verified resume) and run lock (exclusive, stale detection)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import date

import pytest

from eo_fusion.config import TimeSpec
from eo_fusion.errors import JobError, LockError
from eo_fusion.pipeline.manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    RunManifest,
    TileRecord,
    read_lock,
    run_lock,
    sha256_file,
)


def _manifest(tmp_path, content=b"tile bytes"):
    (tmp_path / "tiles").mkdir()
    (tmp_path / "tiles" / "r000_c000.tif").write_bytes(content)
    m = RunManifest(run_id="job-abc", job_name="job", config_hash="c" * 64, run_hash="r" * 64)
    m.tiles["r000_c000"] = TileRecord(
        state="done",
        inputs={"s2-l1c": ["a", "b"]},
        output="tiles/r000_c000.tif",
        sha256=sha256_file(tmp_path / "tiles" / "r000_c000.tif"),
    )
    m.tiles["r000_c001"] = TileRecord(state="failed", error="OSError: boom")
    return m


def test_manifest_roundtrip_is_atomic_json(tmp_path):
    m = _manifest(tmp_path)
    m.save(tmp_path)
    # No temporary files left beside it; the file is complete JSON.
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME, "tiles"]
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["tiles"]["r000_c001"]["error"] == "OSError: boom"
    back = RunManifest.load(tmp_path)
    assert back == m
    assert back.counts() == {"pending": 0, "done": 1, "failed": 1}


def test_missing_manifest_loads_as_none(tmp_path):
    assert RunManifest.load(tmp_path) is None


def test_corrupt_manifest_names_file_and_fix(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text('{"run_id": ')
    with pytest.raises(JobError, match=r"manifest\.json.*--force"):
        RunManifest.load(tmp_path)


def test_verified_needs_state_file_and_matching_checksum(tmp_path):
    m = _manifest(tmp_path)
    assert m.verified("r000_c000", tmp_path)
    assert not m.verified("r000_c001", tmp_path)  # failed
    assert not m.verified("r009_c009", tmp_path)  # unknown
    # Same size, different bytes: an existing file is not trusted blindly.
    (tmp_path / "tiles" / "r000_c000.tif").write_bytes(b"tile bytez")
    assert not m.verified("r000_c000", tmp_path)
    (tmp_path / "tiles" / "r000_c000.tif").unlink()
    assert not m.verified("r000_c000", tmp_path)


def test_lock_is_exclusive_and_released(tmp_path):
    with run_lock(tmp_path) as me:
        info = read_lock(tmp_path / LOCK_NAME)
        assert info == me and info.pid == os.getpid() and info.host == socket.gethostname()
        with (
            pytest.raises(LockError, match=rf"locked by PID {os.getpid()}.*delete"),
            run_lock(tmp_path),
        ):
            pass
        assert (tmp_path / LOCK_NAME).exists()  # the failed attempt did not remove it
    assert not (tmp_path / LOCK_NAME).exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    lock = tmp_path / LOCK_NAME
    lock.write_text(
        json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": "2020-01-01"})
    )
    with run_lock(tmp_path) as me:
        assert read_lock(lock) == me
    assert not lock.exists()


def test_lock_from_another_host_is_respected(tmp_path):
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": 1, "host": "other-node-17", "started": "2020-01-01"}))
    with pytest.raises(LockError, match="other-node-17"), run_lock(tmp_path):
        pass
    assert lock.exists()


def test_relative_time_window_resolves_against_run_date():
    spec = TimeSpec(last_days=30)
    assert spec.resolve(date(2026, 3, 31)) == (date(2026, 3, 2), date(2026, 3, 31))
    assert spec.to_stac_datetime(date(2026, 3, 31)) == "2026-03-02/2026-03-31"
    absolute = TimeSpec(start="2015-07-01", end="2015-09-30")
    assert absolute.resolve(date(2026, 1, 1)) == (date(2015, 7, 1), date(2015, 9, 30))
    assert TimeSpec().to_stac_datetime(date(2026, 1, 1)) is None
    with pytest.raises(ValueError, match="after end"):
        TimeSpec(start="2015-09-30", end="2015-07-01")


def test_reset_rebuilds_from_sidecars_and_sets_the_old_manifest_aside(tmp_path):
    from types import SimpleNamespace

    from eo_fusion.pipeline.manifest import open_manifest

    tiles = tmp_path / "tiles"
    tiles.mkdir()
    tasks = []
    for i, body in enumerate((b"good", b"bad", b"nosidecar")):
        tid = f"r000_c00{i}"
        (tiles / f"{tid}.tif").write_bytes(body)
        if body != b"nosidecar":
            sha = sha256_file(tiles / f"{tid}.tif") if body == b"good" else "0" * 64
            side = {"output": f"tiles/{tid}.tif", "sha256": sha, "fingerprint": "f" * 64}
            (tiles / f"{tid}.json").write_text(json.dumps(side))
        tasks.append(SimpleNamespace(tile_id=tid, output_relpath=f"tiles/{tid}.tif",
                                     input_ids=lambda: {}, fingerprint="f" * 64))  # fmt: skip
    tasks.append(SimpleNamespace(tile_id="r001_c000", output_relpath="tiles/r001_c000.tif",
                                 input_ids=lambda: {}, fingerprint="f" * 64))  # fmt: skip
    plan = SimpleNamespace(run_dir=tmp_path, tasks=tasks, run_id="j-1", job_name="j",
                           config_hash="c" * 64, run_hash="r" * 64)  # fmt: skip
    (tmp_path / MANIFEST_NAME).write_text("not json")
    with pytest.raises(JobError, match="--reset"):
        open_manifest(plan)
    m = open_manifest(plan, reset=True)
    (aside,) = tmp_path.glob(f"{MANIFEST_NAME}.corrupt-*")
    assert aside.read_text() == "not json"
    reasons = {t.tile_id: m.why_rerun(t, tmp_path) for t in tasks}
    assert reasons == {
        "r000_c000": None,  # its file has the sidecar's sha256: reused
        "r000_c001": "output missing or its checksum does not match",
        "r000_c002": "output missing or its checksum does not match",
        "r001_c000": "new",
    }
    # A verified file whose inputs changed is not reused either.
    moved = SimpleNamespace(**{**vars(tasks[0]), "fingerprint": "e" * 64})
    assert m.why_rerun(moved, tmp_path) == "inputs changed"
    assert m.why_rerun(tasks[0], tmp_path, force=True) == "--force"
