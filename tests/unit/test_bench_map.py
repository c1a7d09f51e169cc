"""Smoke test of the map-job benchmarks (tiny AOI; no timing assertions)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

bench = pytest.importorskip("benchmarks.bench_map")
tile_bench = pytest.importorskip("benchmarks.bench_tile")


@pytest.mark.parametrize("n", [32, 48, 64, 65, 100, 1000])
def test_window_starts_cover_the_axis_like_terratorch(n: int) -> None:
    starts = bench.window_starts(n)
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s : s + bench.WINDOW] = True
    assert covered.all() and starts[-1] == n - bench.WINDOW
    assert all(b - a <= bench.WINDOW for a, b in itertools.pairwise(starts))
    # terratorch (crop W, stride S, delta 0, no padding): range(0, n - W - 1, S) + the edge one
    assert len(starts) == len(range(0, n - bench.WINDOW - 1, bench.STRIDE)) + 1


def test_write_doc_replaces_only_its_own_block(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# P\n\n<!-- bench_stack:begin -->\nstack table\n<!-- bench_stack:end -->\n")
    bench.write_doc(doc, ["map v1"])
    bench.write_doc(doc, ["map v2"])
    tile_bench.write_doc(doc, ["tile v1"], name="bench_tile")
    text = doc.read_text()
    assert "stack table" in text and "map v2" in text and "tile v1" in text
    assert "map v1" not in text and text.count("<!-- bench_map:begin -->") == 1


def test_curve_steps_take_the_max_of_each_bin() -> None:
    curve = [(0.0, 100.0), (1.0, 300.0), (2.0, 200.0), (4.0, 250.0)]
    assert tile_bench.curve_steps(curve, steps=2) == [(2.0, 300.0), (4.0, 250.0)]


def test_scaling_lines_report_every_pair_of_worker_runs() -> None:
    run = lambda s, mb: {"seconds": s, "peak_mb": mb}  # noqa: E731
    extra = {
        "quarter": run(10.0, 900.0),
        "procs1": [run(90.0, 1400.0), run(88.0, 1450.0), run(86.0, 1420.0)],
        "procs2": [run(50.0, 1900.0), run(48.0, 1850.0), run(43.0, 1950.0)],
    }
    memory, workers = bench.scaling_lines(extra, [run(50.0, 990.0)], 4000)
    assert "990 MB at 4000² px, 900 MB at 2000² px (ratio 1.10" in memory
    # pairs 1.80, 1.83, 2.00: min / median / max of the ratios, not a ratio of medians
    assert "3 interleaved pair(s): min / med / max 1.80 / 1.83 / 2.00x" in workers
    assert "medians 88 s vs 48 s; peak 1420 / 1900 MB" in workers
    # without the map peer, the memory figure is the 2-process job's
    assert "1900 MB at 4000² px" in bench.scaling_lines(extra, [], 4000)[0]


@pytest.mark.slow
@pytest.mark.skipif(not bench.DATA.exists(), reason="needs /work/shared/data/s2_18svg")
def test_map_benchmark_runs_the_job_and_the_model_ceiling(tmp_path: Path) -> None:
    scene = bench.make_scene(tmp_path / "scene", 96)
    job = bench.write_job(tmp_path, scene, 96, "smoke", 64)
    r = bench.run_map(job)
    assert r["seconds"] > 0 and r["peak_mb"] > 100 and r["curve"]
    classes = bench._classes_tif(job)
    assert classes.is_file()
    meta = bench.prepare_inputs(job, tmp_path / "inputs.npy")
    assert meta["shape"] == [9, 96, 96] and len(meta["keys"]) == 9
    m = bench.child_model(str(tmp_path / "inputs.npy"), procs=1, batch=4)
    assert m["windows"] == len(bench.window_starts(96)) ** 2
    results = {"map": [r], "model": [{**m, "peak_mb": 1.0}]}
    args = type("A", (), {"rounds": 1, "tile": 64, "peer_precision": "fp32"})()
    lines = bench.report(results, {}, None, 96, args, (1.0, 1.0), (1.0, 1.0), meta)
    assert any("map job / model-only ceiling" in line for line in lines)
    assert any("terratorch peer: fp32" in line for line in lines)  # the peer's precision is said
    assert " build)" in lines[0] and "torch " in lines[0]  # memory depends on torch's build
    tile_lines = tile_bench.summarise(r, 96, 64, (1.0, 1.0))
    assert any("extrapolated" in line for line in tile_lines)
    assert " build)" in tile_lines[0]
    json.dumps(r)  # everything the benchmark keeps is plain JSON
