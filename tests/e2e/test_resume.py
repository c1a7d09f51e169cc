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
from _synthetic_job import CRS, local_item, read_product, synthetic_job

from eo_fusion.files import sha256_file
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


# -- content-addressed resume: inputs edited in place --------------------------------------------

COL0 = ["r000_c000", "r001_c000", "r002_c000"]
COL2 = ["r000_c002", "r001_c002", "r002_c002"]
ALL = sorted(f"r{r:03d}_c{c:03d}" for r in range(3) for c in range(3))


def _quick(out: Path, **kw):
    # Thread workers: these runs only test planning and resume, and start faster this way.
    return synthetic_job(out, processes=False, **kw)


def _items(tmp_path: Path, props_a: dict | None = None) -> dict:
    # A reads the left tile column only, B the right one (padded tiles: 320 m + 40 m halo).
    a, b = tmp_path / "a_B04.tif", tmp_path / "b_B04.tif"
    for p, fill in ((a, b"a"), (b, b"b")):
        if not p.exists():
            p.write_bytes(fill * 4096)
    return {
        "s2-l2a": [
            local_item("A", (465000.0, 5079040.0, 465200.0, 5080000.0), a, props=props_a),
            local_item("B", (465760.0, 5079040.0, 465960.0, 5080000.0), b),
        ]
    }


def test_edited_item_or_asset_recomputes_exactly_the_tiles_that_read_it(tmp_path):
    pred, out = SyntheticPredictor(), tmp_path / "out"
    first = run_job(_quick(out), predictor=pred, items=_items(tmp_path))
    assert first.ok and first.recomputed == {"new": ALL}
    assert run_job(_quick(out), predictor=pred, items=_items(tmp_path)).tiles_reused == 9

    # The asset file of B rewritten in place: same size, same mtime, other bytes.
    b = tmp_path / "b_B04.tif"
    st = b.stat()
    b.write_bytes(b"c" * 4096)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    s = run_job(_quick(out), predictor=pred, items=_items(tmp_path))
    assert s.ok and s.tiles_reused == 6
    assert s.recomputed == {"inputs changed (item B asset B04 sha256)": COL2}
    m = RunManifest.load(s.run_dir)
    asset = m.provenance["inputs"]["items"]["s2-l2a"]["B"]["assets"]["B04"]
    assert asset["kind"] == "local" and asset["sha256"] == sha256_file(b)
    assert all(m.tiles[t].fingerprint == next(
        task.fingerprint for task in _plan(out, tmp_path).tasks if task.tile_id == t
    ) for t in ALL)  # fmt: skip

    # The catalog item edited (metadata only): the tiles reading A, and only those.
    edited = _items(tmp_path, props_a={"eo:cloud_cover": 55.0})
    s2 = run_job(_quick(out), predictor=pred, items=edited)
    assert s2.tiles_reused == 6 and s2.recomputed == {"inputs changed (item A metadata)": COL0}
    report = json.loads((s2.run_dir / "report.json").read_text())
    assert report["resume"]["recomputed"] == {"inputs changed (item A metadata)": COL0}
    assert "item A metadata" in (s2.run_dir / "report.md").read_text()
    # The STAC items cite what the pixels came from.
    (item_json,) = (s2.run_dir / "stac").glob("*-classes/*.json")
    props = json.loads(item_json.read_text())["properties"]
    assert props["eo_fusion:inputs"]["items"]["s2-l2a"]["B"]["assets"]["B04"]["sha256"] == (
        sha256_file(b)
    )
    np.testing.assert_array_equal(read_product(s2), read_product(first))


def _plan(out: Path, tmp_path: Path):
    from datetime import UTC, datetime

    from eo_fusion.pipeline.plan import plan_run

    job = _quick(out)
    return plan_run(job, datetime.now(UTC).date(), _items(tmp_path),
                    model=SyntheticPredictor().provenance())  # fmt: skip


def _square(path: Path, cut_corner: bool) -> None:
    x0, y0, x1, y1 = 465000.0, 5079040.0, 465960.0, 5080000.0
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    if cut_corner:  # the same bounds (same grid), the upper-right corner cut off
        ring = [[x0, y0], [x1, y0], [x1, y1 - 300], [x1 - 300, y1], [x0, y1], [x0, y0]]
    geom = {"type": "Polygon", "coordinates": [ring]}
    path.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": geom}))


def test_edited_aoi_file_recomputes_every_tile(tmp_path):
    pred, aoi = SyntheticPredictor(), tmp_path / "aoi.geojson"
    spec = {"geojson": str(aoi), "crs": CRS}
    _square(aoi, cut_corner=False)
    before = run_job(_quick(tmp_path / "out", aoi=spec), predictor=pred, items={})
    old_pixels = read_product(before)
    _square(aoi, cut_corner=True)  # edited in place: same path, so the same run folder
    after = run_job(_quick(tmp_path / "out", aoi=spec), predictor=pred, items={})
    assert after.run_dir == before.run_dir and after.ok and after.tiles_reused == 0
    assert after.recomputed == {"inputs changed (AOI content)": ALL}
    # The pixels are those of a fresh run over the edited AOI, not the old ones.
    fresh = run_job(_quick(tmp_path / "fresh", aoi=spec), predictor=pred, items={})
    np.testing.assert_array_equal(read_product(after), read_product(fresh))
    changed = read_product(after) != old_pixels
    assert changed.any() and (read_product(after)[changed] == 255).all()  # the cut corner
    report = json.loads((after.run_dir / "report.json").read_text())
    assert report["provenance"]["inputs"]["aoi"]["sha256"] == sha256_file(aoi)
