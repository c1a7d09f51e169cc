"""Benchmark: a Sentinel-2-tile-sized map job (10980² px at 10 m) or a fraction of one, with the
memory curve, extrapolated to the whole tile.

DATA and JOB: exactly as ``bench_map.py`` (real 18SVG L1C pixels mirror-tiled to cover the AOI,
COGs, a static STAC catalog, ``eo-fusion map`` with the bundled model), over ``--size`` x ``--size``
px. ``--size 10980`` is a whole tile; the default 1372 px is 1/64 of one, short enough for
``make benchmark``; ``--size 2745`` is 1/16.

Reports the wall time of the whole command, the peak memory of its process tree (PSS: shared
pages split between processes) and its curve over time (10 % steps), and the whole-tile figure
by linear extrapolation in pixels (fixed start-up costs scale up too, so this over-estimates
the time; memory is bounded by the tiles in flight, not by the AOI: ``bench_map`` measures
that at two AOI sizes).

Usage:  python benchmarks/bench_tile.py [--size 1372] [--tile 1024] [--doc docs/performance.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_map import _default_tile, make_scene, run_map, torch_build, write_doc, write_job
from bench_stack import _machine

S2_TILE_PX = 10980  # a Sentinel-2 MGRS tile: 109.8 km at 10 m
TARGET_S, TARGET_MB = 30 * 60, 2048


def curve_steps(curve: list[tuple[float, float]], steps: int = 10) -> list[tuple[float, float]]:
    """The curve's memory at each 1/``steps`` of its duration (``(seconds, MB)``; max in bin)."""
    if not curve:
        return []
    end = curve[-1][0] or 1.0
    out = []
    for k in range(1, steps + 1):
        lo, hi = end * (k - 1) / steps, end * k / steps
        inbin = [mb for t, mb in curve if lo <= t <= hi]
        out.append((round(hi, 1), max(inbin) if inbin else out[-1][1] if out else 0.0))
    return out


def summarise(r: dict, size: int, tile: int, load: tuple[float, float]) -> list[str]:
    frac = size * size / S2_TILE_PX**2
    full_s = r["seconds"] / frac
    ok_t, ok_m = full_s <= TARGET_S, r["peak_mb"] <= TARGET_MB
    steps = ", ".join(f"{t:.0f} s: {mb:.0f}" for t, mb in curve_steps(r["curve"]))
    return [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {_machine()}, {torch_build()}; "
        f"load average {load[0]:.1f} before, {load[1]:.1f} after.",
        "",
        f"`python benchmarks/bench_tile.py --size {size}` (tile_size {tile}): a {size} x {size} "
        f"px AOI = {frac:.4f} of a Sentinel-2 tile ({S2_TILE_PX}² px), real 18SVG L1C pixels, "
        "bundled model, `eo-fusion map` end to end.",
        "",
        "| | seconds | Mpx/s | peak MB (PSS) | peak MB (RSS sum) |",
        "|---|---|---|---|---|",
        f"| measured, {size}² px | {r['seconds']:.0f} | {size * size / 1e6 / r['seconds']:.3f} "
        f"| {r['peak_mb']:.0f} | {r['peak_rss_mb']:.0f} |",
        f"| whole tile, extrapolated (× {1 / frac:.1f} in pixels) | {full_s:.0f} "
        f"({full_s / 60:.1f} min) | — | {r['peak_mb']:.0f} (bounded by tiles in flight) | — |",
        "",
        f"- target ≤ 30 min at ≤ 2 GB: time {'met' if ok_t else 'NOT met'}, memory "
        f"{'met' if ok_m else 'NOT met'}",
        f"- memory curve (PSS MB, max in each tenth of the run): {steps}",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=S2_TILE_PX // 8, help="AOI edge in px (10 m)")
    p.add_argument("--tile", type=int, default=0, help="job tile_size (default: job default)")
    p.add_argument("--doc", default="", help="regenerate the tile block in this markdown file")
    p.add_argument("--curve", default="", help="write the full memory curve (JSON) here")
    a = p.parse_args()
    tile = a.tile or _default_tile()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_tile_") as tmp:
        folder = Path(tmp)
        print(f"writing COGs of real 18SVG pixels for a {a.size}² px AOI ...", flush=True)
        scene = make_scene(folder / "scene", a.size)
        r = run_map(write_job(folder, scene, a.size, "s2tile", tile))
    lines = summarise(r, a.size, tile, (load0, os.getloadavg()[0]))
    print("\n".join(lines))
    if a.curve:
        Path(a.curve).write_text(json.dumps(r["curve"]))
    if a.doc:
        write_doc(Path(a.doc), lines, name="bench_tile")


if __name__ == "__main__":
    main()
