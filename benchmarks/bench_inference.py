"""Benchmark: the bundled land-cover model's encoder against the matmul peak of its precision.

For each precision (fp32, and bf16 autocast where the CPU or GPU supports it) this reports, in
one process and with the same thread count:

* the **matmul peak** of that precision: the best achieved FLOP/s of ``torch.mm`` over square
  1024² and 2048² matrices and the encoder's own largest GEMM (tokens × width → 4 × width, the
  MLP's first layer), best of ``--repeat`` calls each;
* the **encoder's achieved FLOP/s**: its FLOPs (counted with ``torch.utils.flop_counter`` on one
  batch of windows: linear layers, attention, the patch-embedding convolution) over the time of a
  forward pass, as min/median/max over ``--repeat`` timed passes after one warm-up, and as a
  share of that precision's peak (the issue's target: ≥ 50 %);
* ``predict()`` throughput on a ``--size``² tile (output Mpx/s, min/median/max) for the same
  precision, so the share of time outside the encoder (decoder, blending) is visible;
* optionally (``--compile``) the same encoder through ``torch.compile`` (inductor; compiling
  takes about a minute on two cores and needs a C compiler);
* the load average before and after (the machine may be shared: compare interleaved rows only).

``--windows`` instead compares window / overlap settings (docs/performance.md, "Model ceiling"):
accuracy on the demo (the Slovenia sample stack of ``pipelines/sample_landcover.yaml`` against its
LULC raster, and agreement with the 32 / 16 fp32 map), and process CPU seconds of ``predict`` on a
synthetic tile of a 128 px core plus a ``window - 1`` px halo per side (what a seam-free map-job
tile costs), fp32 and bf16, ``--repeat`` interleaved rounds (use ``--threads 1`` on a busy machine).

Inputs are SYNTHETIC values drawn from the model card's normalisation statistics (mean ± std per
band) on a UTM grid: throughput does not depend on the pixel values. Peak memory of ``predict``
is measured in a subprocess (``--memory``: Linux ``VmHWM`` growth during one call).

Usage:  .venv/bin/python benchmarks/bench_inference.py [--size 256] [--threads 2] [--repeat 5]
            [--batch 32] [--device cpu] [--compile] [--memory] [--windows]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

if TYPE_CHECKING:
    from eo_fusion.models.card import ModelCard
    from eo_fusion.models.checkpoint import LoadedModel


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeat: int, device: torch.device) -> list[float]:
    """Seconds of ``repeat`` calls of ``fn`` after one warm-up call."""
    fn()
    _sync(device)
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


def matmul_peak(
    dtype: torch.dtype, device: torch.device, shapes: Sequence[tuple[int, int, int]], repeat: int
) -> tuple[float, tuple[int, int, int]]:
    """Best achieved FLOP/s of ``(m × k) @ (k × n)`` over ``shapes`` (2 m k n FLOPs each)."""
    best, where = 0.0, shapes[0]
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        rate = 2 * m * k * n / min(timed(lambda a=a, b=b: torch.mm(a, b), repeat, device))
        if rate > best:
            best, where = rate, (m, k, n)
    return best, where


def encoder_flops(model: LoadedModel, x: torch.Tensor, keys: list[str]) -> float:
    """FLOPs of one encoder pass over the batch ``x`` (matmuls, attention, convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = model.landcover
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net.encoder(torch.nan_to_num(x), keys, net.take)
    return float(fc.get_total_flops())


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.3g} / {statistics.median(values):.3g} / {max(values):.3g}"


def _precisions(device: torch.device) -> list[str]:
    from eo_fusion.devices import cpu_has_native_bf16

    if device.type == "cuda":
        return ["fp32", "bf16" if torch.cuda.is_bf16_supported() else "fp16"]
    return ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]


def encoder_row(
    model: LoadedModel, args: argparse.Namespace, device: torch.device, precision: str
) -> dict[str, Any]:
    """Peak, encoder FLOP/s (eager and optionally compiled) and predict() for one precision."""
    from eo_fusion.devices import autocast, inference_dtype
    from eo_fusion.models import predict

    dtype = inference_dtype(device, precision)
    net = model.landcover.to(device).eval()
    keys = [k for ks in model.card.task("landcover").inputs.values() for k in ks]
    w = model.card.window
    x = torch.randn(args.batch, len(keys), w, w, device=device)
    tokens, dim = args.batch * (w // model.card.encoder.patch_size) ** 2, net.encoder.dim
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048), (tokens, dim, 4 * dim)]
    peak, where = matmul_peak(dtype or torch.float32, device, shapes, args.repeat)
    flops = encoder_flops(model, x, keys)
    row: dict[str, Any] = {"precision": precision, "peak": peak, "peak_shape": where}

    def run_encoder(enc: Callable[..., Any]) -> list[float]:
        with torch.inference_mode(), autocast(device, dtype):
            return [flops / t for t in timed(lambda: enc(x, keys, net.take), args.repeat, device)]

    row["eager"] = run_encoder(net.encoder)
    if args.compile:
        row["compiled"] = run_encoder(torch.compile(net.encoder, dynamic=False))
    stack = synthetic_stack(model.card, args.size)
    kw = dict(device=str(device.type), precision=precision, batch_size=args.batch)
    secs = timed(lambda: predict(stack, model, **kw), args.repeat, device)  # type: ignore[arg-type]
    row["predict_mpx_s"] = [args.size**2 / s / 1e6 for s in secs]
    return row


def child_memory(size: int, threads: int, batch: int, precision: str) -> None:
    """Run in a subprocess: print RSS growth (MiB) of one predict() call."""
    from eo_fusion.models import load_model, predict

    torch.set_num_threads(threads)
    model = load_model()
    stack = synthetic_stack(model.card, size)
    # Reset the kernel's high-water mark (VmHWM) so the peak below is the predict() call's own.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    predict(stack, model, batch_size=batch, device="cpu", precision=precision)  # type: ignore[arg-type]
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_growth_mib": (peak - before) / 1024, "peak_mib": peak / 1024}))


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status, in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory(args: argparse.Namespace, precision: str) -> float:
    cmd = [sys.executable, __file__, "--size", str(args.size), "--threads", str(args.threads),
           "--batch", str(args.batch), "--child-memory", precision]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mib"])


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the table: GFLOP/s as min / median / max over the repeats."""
    print("precision | matmul peak GFLOP/s (shape) | encoder GFLOP/s eager | share of peak "
          "(median) | compiled GFLOP/s | share | predict Mpx/s")  # fmt: skip
    for r in rows:
        g = [v / 1e9 for v in r["eager"]]
        share = 100 * statistics.median(r["eager"]) / r["peak"]
        comp, cshare = "-", "-"
        if "compiled" in r:
            comp = spread([v / 1e9 for v in r["compiled"]])
            cshare = f"{100 * statistics.median(r['compiled']) / r['peak']:.0f} %"
        shape = "×".join(map(str, r["peak_shape"]))
        print(f"{r['precision']:9s} | {r['peak'] / 1e9:8.1f} ({shape}) | {spread(g)} | "
              f"{share:.0f} % | {comp} | {cshare} | {spread(r['predict_mpx_s'])}")  # fmt: skip
        if "memory_mib" in r:
            print(f"  predict peak RSS growth ({args.size}² px): {r['memory_mib']:.0f} MiB")
    for r in rows:
        shares = {k: statistics.median(r[k]) / r["peak"] for k in ("eager", "compiled") if k in r}
        met = [k for k, v in shares.items() if v >= 0.5]
        shown = ", ".join(f"{k} {100 * v:.0f} %" for k, v in shares.items())
        verdict = f"met ({', '.join(met)})" if met else "not met"
        print(f"{r['precision']}: encoder share of its precision's matmul peak: {shown} "
              f"(target ≥ 50 %: {verdict})")  # fmt: skip


WINDOWS = ((32, 16), (32, 8), (32, 0), (64, 32), (64, 16), (128, 32))


def demo_stack_and_labels() -> tuple[xr.Dataset, np.ndarray]:
    """The demo job's stack over its whole grid (one tile) and the LULC class at each pixel."""
    import tempfile
    from pathlib import Path

    import rasterio
    import yaml

    from eo_fusion import api
    from eo_fusion.stack import build_stack

    repo = Path(__file__).resolve().parents[1]
    src = repo / "pipelines" / "sample_landcover.yaml"
    cfg = yaml.safe_load(src.read_text())
    cfg["aoi"]["geojson"] = str((src.parent / cfg["aoi"]["geojson"]).resolve())
    cfg["grid"] |= {"tile_size": 512, "halo": 0}
    with tempfile.TemporaryDirectory() as tmp:
        cfg["output"]["dir"] = tmp
        (Path(tmp) / "job.yaml").write_text(yaml.safe_dump(cfg))
        (task,) = api.plan_job(Path(tmp) / "job.yaml").tasks
    st = build_stack(task.tile.padded, dict(task.items), dict(task.modalities), gdal=task.gdal)
    with rasterio.open(repo / "catalogs/sample/data/slovenia/LULC_slovenia_10m.tif") as r:
        lab, inv = r.read(1), ~r.transform
    xs, ys = np.meshgrid(st["x"].values, st["y"].values)
    col, row = (np.floor(v).astype(int) for v in inv * (xs, ys))
    ok = (row >= 0) & (row < lab.shape[0]) & (col >= 0) & (col < lab.shape[1])
    out = np.zeros(xs.shape, "int32")
    out[ok] = lab[row[ok], col[ok]]
    return st.load(), out


def window_accuracy(model: LoadedModel) -> dict[tuple[int, int, str], tuple[float, float]]:
    """(OA against the LULC raster, agreement with 32/16 fp32) per window, overlap, precision."""
    from eo_fusion.models import predict

    stack, lab = demo_stack_and_labels()
    ids = np.array([c.id for c in model.card.task("landcover").classes])
    have, out, ref = np.isin(lab, ids), {}, None
    for prec in ("fp32", "bf16"):
        for w, o in WINDOWS:
            p = predict(stack, model, device="cpu", precision=prec, window=w, overlap=o)  # type: ignore[arg-type]
            cls = ids[p.values.argmax(0)]
            ref = cls if ref is None else ref
            out[(w, o, prec)] = (float((cls[have] == lab[have]).mean()), float((cls == ref).mean()))
    return out


def window_costs(model: LoadedModel, repeat: int) -> dict[tuple[int, int, str], list[float]]:
    """Process CPU seconds of predict() per 128² output px (halo window - 1), interleaved."""
    from eo_fusion.models import predict

    out: dict[tuple[int, int, str], list[float]] = {}
    for rnd in range(repeat):
        for w, o in WINDOWS[rnd % len(WINDOWS) :] + WINDOWS[: rnd % len(WINDOWS)]:
            stack = synthetic_stack(model.card, 128 + 2 * (w - 1))
            for prec in ("bf16", "fp32"):
                t = time.process_time()
                predict(
                    stack, model, device="cpu", precision=prec, window=w, overlap=o, batch_size=32
                )  # type: ignore[arg-type]
                out.setdefault((w, o, prec), []).append(time.process_time() - t)
    return out


def windows_report(model: LoadedModel, repeat: int) -> None:
    acc, cost = window_accuracy(model), window_costs(model, repeat)
    print("window / overlap | precision | CPU s per 128² px min / med / max | OA on demo % "
          "| agree with 32/16 fp32 %")  # fmt: skip
    for (w, o, prec), secs in sorted(cost.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        oa, agree = acc[(w, o, prec)]
        print(f"{w} / {o} | {prec} | {spread(secs)} | {100 * oa:.2f} | {100 * agree:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="predict() tile edge in pixels")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats (≥ 3)")
    ap.add_argument("--batch", type=int, default=32, help="windows per forward pass")
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--memory", action="store_true", help="predict() peak memory (subprocess)")
    ap.add_argument("--windows", action="store_true", help="compare window / overlap settings")
    ap.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child_memory is not None:
        child_memory(args.size, args.threads, args.batch, args.child_memory)
        return 0
    if args.repeat < 3:
        ap.error("--repeat must be at least 3 (min/median/max)")
    from eo_fusion.devices import describe_device, resolve_device
    from eo_fusion.models import load_model

    device = resolve_device(args.device, option="--device")
    model = load_model()
    card = model.card
    sha = card.weights.sha256[:12] if card.weights else "?"
    load0 = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"model {card.name} (sha256 {sha}), encoder {card.encoder.size} "
          f"(dim {model.landcover.encoder.dim}), window {card.window} px, batch {args.batch}, "
          f"{args.threads} threads, {describe_device(device, None)['name']}, "
          f"torch {torch.__version__}; load average {load0}")  # fmt: skip
    if args.windows:
        windows_report(model, args.repeat)
        return 0
    rows = []
    for precision in _precisions(device):
        row = encoder_row(model, args, device, precision)
        if args.memory and device.type == "cpu":
            row["memory_mib"] = _memory(args, precision)
        rows.append(row)
    report(rows, args)
    load1 = os.getloadavg()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in load1)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
