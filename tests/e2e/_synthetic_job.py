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

from eo_fusion.bands import get_band
from eo_fusion.catalogs.items import BandAsset, NormalizedItem
from eo_fusion.config import JobSpec
from eo_fusion.pipeline.run import RunSummary, run_job
from eo_fusion.testing.synthetic import SyntheticPredictor

CRS = "EPSG:32633"


def synthetic_job(out: Path, *, size_px: int = 96, tile_size: int = 32, halo: int = 4,
                  wave_size: int = 4, processes: bool = True, name: str = "synthetic",
                  workers: int = 1, threads: int = 2, aoi: dict | None = None,
                  **extra) -> JobSpec:  # fmt: skip
    """A job over a square AOI of ``size_px`` × ``size_px`` 10 m pixels (UTM 33N).

    ``aoi`` replaces that AOI (a job ``aoi`` section); ``extra`` are more top-level job options.
    """
    x0, y1 = 465000.0, 5080000.0
    return JobSpec.model_validate(
        {
            "name": name,
            "aoi": aoi or {"bbox": [x0, y1 - 10 * size_px, x0 + 10 * size_px, y1], "crs": CRS},
            "grid": {"resolution": 10, "crs": CRS, "tile_size": tile_size, "halo": halo},
            "modalities": {},
            "output": {"dir": str(out)},
            "dask": {
                "workers": workers,
                "threads_per_worker": threads,
                "processes": processes,
                "wave_size": wave_size,
            },
            **extra,
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


def local_item(
    item_id: str, bbox_utm: tuple[float, float, float, float], asset: Path, *,
    props: dict | None = None, href: str | None = None,
) -> NormalizedItem:  # fmt: skip
    """An S2 item whose B04 band is the file ``asset`` (or ``href``), over a UTM 33N box.

    The synthetic predictor never reads it; these items exist so that planning fingerprints
    real files (content, size, mtime) the way it does for a catalog's items.
    """
    from datetime import UTC, datetime

    import shapely.geometry
    from odc.geo.geom import box

    ll = box(*bbox_utm, crs=CRS).to_crs("EPSG:4326")
    band = BandAsset(key="s2:B04", asset_key="B04", href=href or str(asset), band_index=1,
                     spec=get_band("s2:B04"))  # fmt: skip
    return NormalizedItem(
        id=item_id,
        collection="test",
        modality="s2-l2a",
        datetime=datetime(2020, 6, 1, 10, tzinfo=UTC),
        bbox=tuple(ll.boundingbox),
        geometry=shapely.geometry.mapping(ll.geom),
        bands={"s2:B04": band},
        properties=props or {"eo:cloud_cover": 1.0},
    )
