"""Benchmark: CPU inference of the bundled land-cover model with ``predict()``.

Reports, for one tile size and a few window batch sizes:

* throughput in pixels per second (``predict`` on a ``size × size`` tile, best of ``--repeat``);
* achieved FLOP/s (model FLOPs counted with ``torch.utils.flop_counter`` on one batch, times the
  number of windows, over the measured time) as a share of this machine's fp32 matrix-multiply
  FLOP/s, measured in the same run with the same thread count (best of several 2048² matmuls);
* peak memory per tile: in a fresh subprocess that loads the model, the resident-set high-water
  mark during one ``predict`` call minus the resident set just before it (Linux ``VmHWM``, reset
  through ``/proc/self/clear_refs``).

Inputs are SYNTHETIC values drawn from the model card's normalisation statistics (mean ± std per
band) on a UTM grid: throughput does not depend on the pixel values.

Usage:  .venv/bin/python benchmarks/bench_inference.py [--size 256] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
import xarray as xr

if TYPE_CHECKING:
    from eo_fusion.models.card import ModelCard


def synthetic_stack(card: ModelCard, size: int, seed: int = 0) -> xr.Dataset:
    """A tile with the land-cover inputs of the card, values ~ N(mean, std) per band."""
    rng = np.random.default_rng(seed)
    sec = card.task("landcover")
    variables, coords = {}, {}
    for mod, keys in sec.inputs.items():
        norms = [card.band_norm(mod, k) for k in keys]
        data = np.stack([rng.normal(n.mean, n.std, (size, size)) for n in norms]).astype("float32")
        variables[mod] = ((f"{mod}:band", "y", "x"), data)
        coords[f"{mod}:band"] = keys
    coords["y"] = 5_080_000 - 10 * np.arange(size) - 5.0
    coords["x"] = 465_000 + 10 * np.arange(size) + 5.0
    return xr.Dataset(variables, coords=coords)


def matmul_flops(threads: int, n: int = 2048, reps: int = 5) -> float:
    """Best achieved fp32 FLOP/s of an ``n × n`` matmul (2 n³ FLOPs each)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def window_flops(model, card: ModelCard, batch: int) -> float:
    """FLOPs of the land-cover model on one batch of windows (matmuls + convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    w = card.window
    keys = [k for ks in card.task("landcover").inputs.values() for k in ks]
    x = torch.randn(batch, len(keys), w, w)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model.landcover(x, keys)
    return float(fc.get_total_flops())


def n_windows(size: int, window: int) -> int:
    from eo_fusion.models.predict import _starts

    return len(_starts(size, 0, window, window // 2)) ** 2


def child_memory(size: int, threads: int, batch: int) -> None:
    """Run in a subprocess: print RSS growth (MiB) of one predict() call."""
    from eo_fusion.models import load_model, predict

    torch.set_num_threads(threads)
    model = load_model()
    stack = synthetic_stack(model.card, size)
    # Reset the kernel's high-water mark (VmHWM) so the peak below is the predict() call's own.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    predict(stack, model, batch_size=batch)
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_growth_mib": (peak - before) / 1024, "peak_mib": peak / 1024}))


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status, in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="tile edge in pixels")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--child-memory", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_memory is not None:
        child_memory(args.size, args.threads, args.child_memory)
        return 0
    from eo_fusion.models import load_model, predict

    torch.set_num_threads(args.threads)
    model = load_model()
    card = model.card
    stack = synthetic_stack(card, args.size)
    peak = matmul_flops(args.threads)
    window = card.window
    nwin = n_windows(args.size, window)
    sha = card.weights.sha256[:12] if card.weights else "?"
    print(f"model {card.name} (sha256 {sha}), tile {args.size}² px, "
          f"window {window} px → {nwin} windows, {args.threads} threads")  # fmt: skip
    print(f"fp32 matmul peak (2048², best of 5): {peak / 1e9:.1f} GFLOP/s")
    print("batch | s/tile | Mpx/s | GFLOP/s | share of matmul | peak RSS growth MiB")
    for batch in args.batch:
        flops = window_flops(model, card, batch) / batch * nwin
        predict(stack, model, batch_size=batch)  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            predict(stack, model, batch_size=batch)
            best = min(best, time.perf_counter() - t)
        mem = subprocess.run(
            [sys.executable, __file__, "--size", str(args.size), "--threads", str(args.threads),
             "--child-memory", str(batch)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        growth = json.loads(mem.stdout.strip().splitlines()[-1])["peak_growth_mib"]
        rate = flops / best
        print(f"{batch:5d} | {best:6.2f} | {args.size**2 / best / 1e6:5.3f} | "
              f"{rate / 1e9:7.2f} | {100 * rate / peak:14.1f} % | {growth:8.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
