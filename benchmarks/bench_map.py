"""Benchmark: the map job's memory and scaling (``eo_fusion.pipeline.run_job``).

Inputs and model are SYNTHETIC (``eo_fusion.testing.synthetic.SyntheticPredictor``: class
probabilities computed from pixel coordinates, plus ``--work`` float32 matmuls per tile to stand in
for a model's compute). Everything else is the real job machinery: planning, a dask LocalCluster,
bounded waves, per-tile files, the manifest, the window-by-window mosaic, COG writing and
validation, STAC and the QA report.

Reports, each against a baseline measured in the same run:

1. **Memory vs AOI size**: peak resident memory of the whole process tree (this process plus the
   LocalCluster's worker processes; sampled every 20 ms; shared pages counted once per process, so
   this over-counts) for a base AOI and one 16× larger (4× each side), same tile size.
   Target: ratio ≤ 1.3 (memory is bounded by tile size and wave size, not by AOI size).
2. **Throughput vs workers**: tiles per second of the compute phase (cluster up → last tile
   done, so worker imports on the first task count) with 2 single-threaded worker processes vs 1,
   on the large AOI. Target: ≥ 1.6× on a 2-core machine.
3. **Workers as threads or processes** (to choose defaults): the same 2-way parallel run with one
   worker process of 2 threads, and with 2 threads inside this process.
4. **Control: the machine's parallelism right now**: the same per-tile matrix work as bare dask
   tasks (no pipeline) on 2 worker processes vs 1. On a shared machine other jobs take cores; if
   this control is far below 2×, the pipeline figures above are limited by the machine, not by
   the pipeline.

Usage:  .venv/bin/python benchmarks/bench_map.py [--base 512] [--tile 256] [--work 60]
"""

from __future__ import annotations

import os

# One BLAS thread per worker thread, or two workers would oversubscribe the two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil

from eo_fusion.config import JobSpec
from eo_fusion.pipeline.run import ProgressHook, run_job
from eo_fusion.testing.synthetic import SyntheticPredictor


class _Timer(ProgressHook):
    def __init__(self) -> None:
        self.compute_start = 0.0
        self.last_done = 0.0
        self.tiles = 0

    def phase(self, name: str) -> None:
        if name == "compute":
            self.compute_start = time.perf_counter()

    def tile_done(self, outcome) -> None:  # type: ignore[no-untyped-def]
        self.last_done = time.perf_counter()
        self.tiles += 1


class _PeakRSS:
    """Peak of the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:  # type: ignore[no-untyped-def]
        self._stop.set()
        self._thread.join()


def _job(out: Path, size_px: int, tile: int, workers: int, threads: int, processes: bool,
         wave: int) -> JobSpec:  # fmt: skip
    x0, y1 = 400000.0, 5100000.0
    return JobSpec.model_validate(
        {
            "name": f"bench-{size_px}-{workers}x{threads}-{'p' if processes else 't'}",
            "aoi": {"bbox": [x0, y1 - 10 * size_px, x0 + 10 * size_px, y1], "crs": "EPSG:32633"},
            "grid": {"resolution": 10, "crs": "EPSG:32633", "tile_size": tile, "halo": 16},
            "modalities": {},
            "output": {"dir": str(out)},
            "dask": {
                "workers": workers,
                "threads_per_worker": threads,
                "processes": processes,
                "memory_limit": "2GiB",
                "wave_size": wave,
            },
        }
    )


def _run(out: Path, pred: SyntheticPredictor, **kw) -> dict:
    out = Path(tempfile.mkdtemp(dir=out))  # a fresh folder: never resume an earlier run
    timer = _Timer()
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        s = run_job(_job(out, **kw), predictor=pred, items={}, progress=timer)
        wall = time.perf_counter() - t0
    assert s.ok, s.failures
    compute = timer.last_done - timer.compute_start
    return {
        "tiles": s.tiles_total,
        "wall_s": round(wall, 2),
        "compute_s": round(compute, 2),
        "tiles_per_s": round(timer.tiles / compute, 3),
        "peak_rss_mib": round(mem.peak / 2**20, 1),
    }


def _control(work: int, tile: int, tasks: int = 16) -> float:
    """Throughput ratio of bare dask tasks (2 worker processes vs 1) doing the per-tile work."""
    from distributed import Client, LocalCluster

    from eo_fusion.testing.synthetic import _burn

    rates = []
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
                Client(cluster) as client:  # fmt: skip
            client.gather(client.map(_burn, [(tile + 32) ** 2] * workers, [1] * workers,
                                     pure=False))  # warm-up (imports)  # fmt: skip
            t0 = time.perf_counter()
            client.gather(client.map(_burn, [(tile + 32) ** 2] * tasks, [work] * tasks,
                                     pure=False))  # fmt: skip
            rates.append(tasks / (time.perf_counter() - t0))
    return rates[1] / rates[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=512, help="base AOI edge in pixels (10 m)")
    ap.add_argument("--tile", type=int, default=256, help="tile edge in pixels")
    ap.add_argument("--work", type=int, default=60, help="synthetic matmuls per tile")
    ap.add_argument("--wave", type=int, default=4, help="wave size (tiles in flight)")
    args = ap.parse_args()
    pred = SyntheticPredictor(work=args.work)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_map_") as tmp:
        out = Path(tmp)
        common = {"tile": args.tile, "wave": args.wave}
        print("SYNTHETIC inputs and predictor (coordinates -> classes, matmul work per tile)")
        results["base_2proc"] = _run(out, pred, size_px=args.base, workers=2, threads=1,
                                     processes=True, **common)  # fmt: skip
        results["large16x_2proc"] = _run(out, pred, size_px=4 * args.base, workers=2,
                                         threads=1, processes=True, **common)  # fmt: skip
        # The same with the default set-up: 2 worker threads inside this process.
        results["base_threads"] = _run(out, pred, size_px=args.base, workers=1, threads=2,
                                       processes=False, **common)  # fmt: skip
        results["large16x_threads"] = _run(out, pred, size_px=4 * args.base, workers=1,
                                           threads=2, processes=False, **common)  # fmt: skip
        # 16x the base area too, so that worker start-up (imports on the first task) is amortised
        # as in real jobs; a few tiles would mostly measure process start-up.
        mid = 4 * args.base
        results["scale_1proc"] = _run(out, pred, size_px=mid, workers=1, threads=1,
                                      processes=True, **common)  # fmt: skip
        results["scale_2proc"] = _run(out, pred, size_px=mid, workers=2, threads=1,
                                      processes=True, **common)  # fmt: skip
        results["scale_1proc_2threads"] = _run(out, pred, size_px=mid, workers=1, threads=2,
                                               processes=True, **common)  # fmt: skip
        results["scale_threads_only"] = _run(out, pred, size_px=mid, workers=1, threads=2,
                                             processes=False, **common)  # fmt: skip
    control = _control(args.work, args.tile)
    for name, r in results.items():
        print(f"{name:24s} {json.dumps(r)}")
    mem_ratio = results["large16x_2proc"]["peak_rss_mib"] / results["base_2proc"]["peak_rss_mib"]
    mem_thr = results["large16x_threads"]["peak_rss_mib"] / results["base_threads"]["peak_rss_mib"]
    speedup = results["scale_2proc"]["tiles_per_s"] / results["scale_1proc"]["tiles_per_s"]
    thr = results["scale_1proc_2threads"]["tiles_per_s"] / results["scale_1proc"]["tiles_per_s"]
    inproc = results["scale_threads_only"]["tiles_per_s"] / results["scale_1proc"]["tiles_per_s"]
    print(
        f"peak memory, AOI {4 * args.base}² vs {args.base}² px (16x area): "
        f"{mem_ratio:.2f}x  (target <= 1.3)"
    )
    print(f"  same with 2 worker threads in this process (the default): {mem_thr:.2f}x")
    print(f"throughput, 2 worker processes vs 1: {speedup:.2f}x  (target >= 1.6)")
    print(f"throughput, 1 process x 2 threads vs 1 process x 1 thread: {thr:.2f}x")
    print(f"throughput, 2 threads in the client process vs 1 process x 1 thread: {inproc:.2f}x")
    print(
        f"control: bare dask tasks, 2 worker processes vs 1: {control:.2f}x "
        f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
