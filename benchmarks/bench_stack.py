"""Benchmark: eo-fusion ``build_stack`` vs ``odc.stac.load`` on the same COGs, bands and grid.

SYNTHETIC INPUTS: the sample data has no 20 km Sentinel-2 scene with all bands, so this script
writes a synthetic Sentinel-2 L2A-like item (10 bands as uint16 COGs: B02/B03/B04/B08 at 10 m,
B05/B06/B07/B8A/B11/B12 at 20 m, plus an SCL band at 20 m with cloud blobs), 24 km x 24 km in
UTM 33N, and serves it over HTTP on 127.0.0.1 with range requests (GDAL /vsicurl/). The values
are smooth fields plus noise; they exercise I/O and resampling, not science.

Both loaders read the same 10 bands onto the same 20 km x 20 km, 10 m grid (2000 x 2000 px;
10 m bands pasted, 20 m bands bilinear). eo-fusion additionally reads SCL, masks clouds and
records QA (valid fraction, provenance), i.e. "our masks and QA on". Each run happens in a fresh
subprocess so peak memory (ru_maxrss) is per loader; runs alternate and the best of ``--repeat``
is reported. Pixel values must agree within the resampling tolerance where eo-fusion did not
mask a cloud.

Usage:  .venv/bin/python benchmarks/bench_stack.py [--repeat 2] [--size-km 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

BANDS_10 = ["B02", "B03", "B04", "B08"]
BANDS_20 = ["B05", "B06", "B07", "B8A", "B11", "B12"]
BANDS = BANDS_10 + BANDS_20
ORIGIN = (400_000.0, 5_100_000.0)  # UTM 33N, on whole multiples of 60 m like real S2 tiles
SCENE_KM = 24


def _write_cog(path: Path, arr: np.ndarray, res: float) -> None:
    import rasterio
    from affine import Affine

    profile = {
        "driver": "COG",
        "width": arr.shape[1],
        "height": arr.shape[0],
        "count": 1,
        "dtype": arr.dtype.name,
        "crs": "EPSG:32633",
        "transform": Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]),
        "nodata": 0,
        "blocksize": 512,
        "compress": "deflate",
        "overview_resampling": "nearest" if path.stem == "SCL" else "average",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)


def make_scene(folder: Path) -> None:
    """Write the synthetic scene (see module doc) into ``folder``."""
    rng = np.random.default_rng(7)
    for i, band in enumerate(BANDS):
        res = 10 if band in BANDS_10 else 20
        n = SCENE_KM * 1000 // res
        y, x = np.mgrid[0:n, 0:n].astype(np.float32) * (res / 10)
        field = 2000 + 800 * np.sin(x / (150 + 20 * i)) * np.cos(y / (230 - 10 * i))
        field += rng.normal(0, 40, size=field.shape).astype(np.float32)
        _write_cog(folder / f"{band}.tif", np.clip(field, 1, 10000).astype(np.uint16), res)
    n = SCENE_KM * 1000 // 20
    y, x = np.mgrid[0:n, 0:n]
    scl = np.full((n, n), 4, dtype=np.uint8)
    for cy, cx, r in [(300, 400, 60), (800, 200, 90), (500, 900, 40)]:
        scl[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = 9
    _write_cog(folder / "SCL.tif", scl, 20)


def target_grid(size_km: float):
    from affine import Affine
    from odc.geo.geobox import GeoBox

    n = int(size_km * 100)
    x0, y0 = ORIGIN[0] + 2000, ORIGIN[1] - 2000  # inside the scene, on the 10 m anchor
    return GeoBox((n, n), Affine(10, 0, x0, 0, -10, y0), "EPSG:32633")


def run_ours(base_url: str, size_km: float, out: Path) -> dict:
    from eo_fusion.bands import get_band
    from eo_fusion.catalogs.items import BandAsset, NormalizedItem
    from eo_fusion.config import ModalitySpec
    from eo_fusion.stack import build_stack

    bands = {
        f"s2:{b}": BandAsset(f"s2:{b}", b, f"{base_url}/{b}.tif", 1, get_band(f"s2:{b}"))
        for b in [*BANDS, "SCL"]
    }
    item = NormalizedItem(
        "synthetic-s2", "synthetic", "s2-l2a", datetime(2024, 6, 1, tzinfo=UTC),
        (0, 0, 1, 1), {}, bands,
    )  # fmt: skip
    gbox = target_grid(size_km)
    spec = ModalitySpec(bands=[f"s2:{b}" for b in BANDS])
    t0 = time.perf_counter()
    ds = build_stack(gbox, {"s2-l2a": [item]}, {"s2-l2a": spec})
    elapsed = time.perf_counter() - t0
    np.save(out, ds["s2-l2a"].values)
    np.save(out.with_suffix(".valid.npy"), ds["s2-l2a:valid"].values)
    return {"seconds": elapsed, "valid_fraction": ds["s2-l2a"].attrs["valid_fraction"]}


def run_odc(base_url: str, size_km: float, out: Path) -> dict:
    import odc.stac
    import pystac
    from affine import Affine
    from odc.geo.geobox import GeoBox

    gbox = target_grid(size_km)
    n10 = SCENE_KM * 100
    scene = GeoBox((n10, n10), Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), "EPSG:32633")
    footprint = scene.geographic_extent
    item = pystac.Item(
        "synthetic-s2",
        footprint.json,
        list(footprint.boundingbox),
        datetime(2024, 6, 1, tzinfo=UTC),
        {"proj:code": "EPSG:32633"},
        stac_extensions=["https://stac-extensions.github.io/projection/v2.0.0/schema.json"],
    )
    for b in BANDS:
        res = 10 if b in BANDS_10 else 20
        n = SCENE_KM * 1000 // res
        extra = {
            "proj:shape": [n, n],
            "proj:transform": [res, 0, ORIGIN[0], 0, -res, ORIGIN[1]],
            "raster:bands": [{"data_type": "uint16", "nodata": 0}],
        }
        asset = pystac.Asset(
            f"{base_url}/{b}.tif", media_type=pystac.MediaType.COG, extra_fields=extra
        )
        item.add_asset(b, asset)
    t0 = time.perf_counter()
    ds = odc.stac.load([item], bands=BANDS, geobox=gbox, resampling="bilinear", dtype="uint16")
    elapsed = time.perf_counter() - t0  # odc-stac has returned numpy-backed arrays
    arr = np.stack([ds[b].values[0] for b in BANDS])
    np.save(out, (arr * np.float32(1e-4)).astype(np.float32))
    return {"seconds": elapsed}


def _child(which: str, base_url: str, size_km: float, out: str) -> None:
    fn = run_ours if which == "ours" else run_odc
    result = fn(base_url, size_km, Path(out))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--size-km", type=float, default=20.0)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], float(args.child[2]), args.child[3])
        return
    from eo_fusion.catalogs.fileserver import serve_directory

    env = {**os.environ, "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_TIMEOUT": "30"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("SYNTHETIC inputs: writing a 24 km x 24 km S2-like scene (10 bands + SCL)...")
        make_scene(folder)
        results: dict[str, list[dict]] = {"ours": [], "odc": []}
        with serve_directory(folder) as srv:
            base = srv.url_for("B02.tif").rsplit("/", 1)[0]
            for _ in range(args.repeat):
                for which in ("odc", "ours"):
                    out = folder / f"{which}.npy"
                    cmd = [sys.executable, __file__, "--child", which, base, str(args.size_km)]
                    proc = subprocess.run([*cmd, str(out)], env=env, capture_output=True, text=True)
                    if proc.returncode:
                        sys.exit(f"{which} run failed:\n{proc.stderr[-3000:]}")
                    results[which].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        ours = np.load(folder / "ours.npy")
        valid = np.load(folder / "ours.valid.npy")
        ref = np.load(folder / "odc.npy")
    n = int(args.size_km * 100)
    mpix = len(BANDS) * n * n / 1e6
    best = {k: min(r["seconds"] for r in v) for k, v in results.items()}
    peak = {k: max(r["peak_rss_mb"] for r in v) for k, v in results.items()}
    diff = np.abs(ours - ref)[:, valid]
    print(f"grid: {n} x {n} px at 10 m ({args.size_km:g} km), {len(BANDS)} bands, HTTP /vsicurl/")
    for k, label in (("odc", "odc.stac.load"), ("ours", "eo-fusion build_stack (+SCL mask, QA)")):
        rate = mpix / best[k]
        print(f"  {label:40s} {best[k]:6.2f} s  {rate:6.1f} Mpx/s  peak RSS {peak[k]:7.0f} MB")
    print(
        f"throughput ratio eo-fusion / odc-stac: {best['odc'] / best['ours']:.2f}x (target >= 0.8)"
    )
    print(f"valid (cloud-free) fraction: {valid.mean():.3f}")
    p999 = np.percentile(diff, 99.9)
    print(f"max |difference| where valid: {diff.max():.2e} reflectance; p99.9 {p999:.2e}")
    # odc-stac rounds its bilinear output to uint16 DN (1e-4 reflectance); we keep float32.
    assert diff.max() <= 1.5e-4, "pixel values disagree beyond resampling tolerance"


if __name__ == "__main__":
    main()
