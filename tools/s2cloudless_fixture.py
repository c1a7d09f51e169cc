"""Build tests/fixtures/s2cloudless/slovenia_160m.npz: the s2cloudless reference at 160 m.

What it is: the Slovenia Sentinel-2 L1C scenes of 2015-07-31 (cloudy at 160 m) and 2015-07-11
(clear) (real TOA reflectance 0-1 from sentinel-hub/eo-learn's example data,
catalogs/sample/data/slovenia), each with
its ten model bands averaged onto a 160 m grid, and Sentinel Hub's own detector run on it:
``S2PixelCloudDetector(threshold=0.4, average_over=4, dilation_size=2, all_bands=False)``,
``get_cloud_probability_maps`` and ``get_cloud_masks`` (s2cloudless 1.7.3).

The 160 m grid is written down here independently of eo_fusion: pixel edges on whole multiples
of 160 m in EPSG:32633, covering the test's 10 m grid (465200-466150 E, 5079300-5080230 N) plus
9 pixels on every side (averaging 4 + dilation 2 + 1 + the 30 px x 10 m shadow search, 2). The
bands are averaged with GDAL through rasterio (``reproject``, ``Resampling.average``) from the
whole file, not through eo_fusion's reader; pixels outside the scene are NaN and enter the model
as 0 (``nan_to_num``), the probability there is stored as NaN.

Run: ``PYTHONPATH=$PWD .venv/bin/python tools/s2cloudless_fixture.py``
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from s2cloudless import S2PixelCloudDetector

ROOT = Path(__file__).resolve().parents[1]
SLO = ROOT / "catalogs" / "sample" / "data" / "slovenia"
DATES = ("2015-07-31", "2015-07-11")
OUT = ROOT / "tests" / "fixtures" / "s2cloudless" / "slovenia_160m.npz"
FILE_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10"]
FILE_ORDER += ["B11", "B12"]
MODEL_BANDS = ["B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12"]
#: The test's 10 m grid (left, bottom, right, top) and the margin in 160 m pixels.
GRID_BOUNDS = (465_200.0, 5_079_300.0, 466_150.0, 5_080_230.0)
RES, MARGIN = 160.0, 9


def coarse_grid() -> tuple[Affine, tuple[int, int]]:
    left, bottom, right, top = GRID_BOUNDS
    i0, i1 = math.floor(left / RES) - MARGIN, math.ceil(right / RES) + MARGIN
    j0, j1 = math.floor(bottom / RES) - MARGIN, math.ceil(top / RES) + MARGIN
    return Affine(RES, 0, i0 * RES, 0, -RES, j1 * RES), (j1 - j0, i1 - i0)


def reference(path: Path, transform: Affine, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Bands averaged onto the 160 m grid, and s2cloudless' probability and mask there."""
    with rasterio.open(path) as ds:
        idx = [FILE_ORDER.index(b) + 1 for b in MODEL_BANDS]
        src = ds.read(idx).astype(np.float32)
        bands = np.full((len(idx), *shape), np.nan, np.float32)
        reproject(
            src,
            bands,
            src_transform=ds.transform,
            src_crs=ds.crs,
            dst_transform=transform,
            dst_crs=ds.crs,
            src_nodata=np.nan,
            dst_nodata=np.nan,
            resampling=Resampling.average,
        )
    finite = np.all(np.isfinite(bands), axis=0)
    x = np.nan_to_num(np.moveaxis(bands, 0, -1)[None], nan=0.0)
    det = S2PixelCloudDetector(threshold=0.4, average_over=4, dilation_size=2, all_bands=False)
    prob = det.get_cloud_probability_maps(x)[0]
    mask = det.get_cloud_masks(x)[0]
    return {
        "bands": bands,
        "probability": np.where(finite, prob, np.nan).astype(np.float32),
        "mask": mask.astype(np.uint8),
    }


def main() -> None:
    transform, shape = coarse_grid()
    out: dict[str, np.ndarray] = {
        "transform": np.array(transform[:6]),
        "crs": np.array("EPSG:32633"),
    }
    for date in DATES:
        ref = reference(SLO / f"S2_L1C_TOA_{date}_13bands.tif", transform, shape)
        out.update({f"{k}_{date}": v for k, v in ref.items()})
        p, m = ref["probability"], ref["mask"]
        print(f"{date}: {shape}, cloud {m.mean():.3f}, p {np.nanmin(p):.3f}-{np.nanmax(p):.3f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)  # type: ignore[arg-type]  # numpy stubs: kwds are arrays


if __name__ == "__main__":
    main()
