"""Helpers for the end-to-end tests: small synthetic jobs and reading their products.

The synthetic predictor (``eo_fusion.testing.synthetic``) is labelled as such everywhere: it maps
pixel coordinates, not imagery; it lets these tests exercise scheduling, resume and mosaicking on
any grid quickly. Run as a script, this module runs one synthetic job (used by the kill test).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import rasterio

from eo_fusion.config import JobSpec
from eo_fusion.pipeline.run import RunSummary, run_job
from eo_fusion.testing.synthetic import SyntheticPredictor

CRS = "EPSG:32633"


def synthetic_job(out: Path, *, size_px: int = 96, tile_size: int = 32, halo: int = 4,
                  wave_size: int = 4, processes: bool = True, name: str = "synthetic",
                  workers: int = 1, threads: int = 2) -> JobSpec:  # fmt: skip
    """A job over a square AOI of ``size_px`` × ``size_px`` 10 m pixels (UTM 33N)."""
    x0, y1 = 465000.0, 5080000.0
    return JobSpec.model_validate(
        {
            "name": name,
            "aoi": {"bbox": [x0, y1 - 10 * size_px, x0 + 10 * size_px, y1], "crs": CRS},
            "grid": {"resolution": 10, "crs": CRS, "tile_size": tile_size, "halo": halo},
            "modalities": {},
            "output": {"dir": str(out)},
            "dask": {
                "workers": workers,
                "threads_per_worker": threads,
                "processes": processes,
                "wave_size": wave_size,
            },
        }
    )


def read_product(summary: RunSummary, name: str = "classes") -> np.ndarray:
    with rasterio.open(summary.products[name]) as src:
        return src.read()


if __name__ == "__main__":  # python _synthetic_job.py OUT_DIR DELAY_S
    out, delay = Path(sys.argv[1]), float(sys.argv[2])
    job = synthetic_job(out, wave_size=1)
    s = run_job(job, predictor=SyntheticPredictor(delay_s=delay), items={})
    print(json.dumps({"run_dir": str(s.run_dir), "ok": s.ok}))
