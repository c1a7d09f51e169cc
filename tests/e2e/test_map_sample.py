"""The real job on real data: `eo-fusion map` over the Slovenia sample with the model.

Covers what `make demo` promises (COG strictly valid, on the job grid, STAC valid against the
repository's schemas, QA report), resume and locking through the CLI, the seam test with the real
model, and a real `dask scheduler` + two workers giving the LocalCluster's pixels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from eo_fusion.cli import main
from eo_fusion.config import load_job
from eo_fusion.grid import grid_from_aoi
from eo_fusion.pipeline.manifest import LOCK_NAME, RunManifest
from eo_fusion.pipeline.plan import job_aoi
from eo_fusion.pipeline.products import read_rat, validate_cog
from eo_fusion.pipeline.run import run_job
from eo_fusion.pipeline.stac_products import validate_stac_files

REPO = Path(__file__).resolve().parents[2]
SAMPLE_JOB = REPO / "pipelines" / "sample_landcover.yaml"
CROP_JOB = REPO / "pipelines" / "crop_mapping.yaml"


def _job_file(tmp_path: Path, src: Path, checkpoint: str | None, **grid) -> Path:
    """The shipped job file, writing under tmp_path (and optionally another grid/checkpoint)."""
    data = yaml.safe_load(src.read_text())
    data["aoi"]["geojson"] = str((src.parent / data["aoi"]["geojson"]).resolve())
    data["output"]["dir"] = str(tmp_path / "out")
    data["grid"].update(grid)
    # Worker processes: under pytest's -W error, rasterio's thread-unsafe warning suppression can
    # leak a warning between worker threads of this process (harmless outside tests).
    data.setdefault("dask", {})["processes"] = True
    if checkpoint:
        data["model"]["checkpoint"] = checkpoint
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / src.name
    path.write_text(yaml.safe_dump(data))
    return path


def _classes(run_dir: Path, name: str) -> np.ndarray:
    with rasterio.open(run_dir / f"{name}_classes.tif") as src:
        return src.read(1)


def test_sample_landcover_job_via_cli(tmp_path, map_checkpoint, capsys):
    job_path = _job_file(tmp_path, SAMPLE_JOB, map_checkpoint)
    assert main(["map", str(job_path)]) == 0
    job = load_job(job_path)
    (run_dir,) = (tmp_path / "out").iterdir()
    cog = run_dir / "sample-landcover_classes.tif"

    # COG: strict rio-cogeo validation, on exactly the job grid, legend attached.
    assert validate_cog(cog) == (True, [])
    grid = grid_from_aoi(job_aoi(job.aoi), job.grid.resolution, job.grid.crs)
    with rasterio.open(cog) as src:
        assert src.crs.to_epsg() == 32633 == grid.crs.epsg
        assert src.transform == grid.transform and src.shape == grid.shape.yx
        assert src.overviews(1) and src.tags()["OVERVIEW_RESAMPLING"] == "MODE"
        names = json.loads(src.tags(1)["CLASS_NAMES"])
        data = src.read(1)
    assert len(names) >= 2 and [r["Class_Name"] for r in read_rat(Path(f"{cog}.aux.xml"))] == names
    assert (data != 255).mean() > 0.95  # the AOI is mapped (only the snapped edge is nodata)

    # STAC documents valid against the schemas kept in the repository.
    stac = sorted((run_dir / "stac").rglob("*.json"))
    assert len(stac) == 3  # collection + classes item + confidence item
    validate_stac_files(stac)
    item = json.loads((run_dir / "stac" / f"{run_dir.name}-classes" /
                       f"{run_dir.name}-classes.json").read_text())  # fmt: skip
    prov = item["properties"]
    assert prov["eo_fusion:input_items"]["s2-l1c"] and prov["eo_fusion:model_card_sha256"]

    # QA report: class areas in hectares add up to the mapped area.
    report = json.loads((run_dir / "report.json").read_text())
    mapped = int((data != 255).sum())
    assert sum(r["pixels"] for r in report["classes"]) == mapped
    assert sum(r["hectares"] for r in report["classes"]) == pytest.approx(mapped * 0.01)
    assert (run_dir / "quicklook.png").stat().st_size > 1000
    assert "hectares" in (run_dir / "report.md").read_text()

    # Rerun: every tile verifies and is reused; the products are identical.
    before = _classes(run_dir, "sample-landcover")
    assert main(["--log-json", "map", str(job_path)]) == 0
    assert "4 reused" in capsys.readouterr().err
    np.testing.assert_array_equal(_classes(run_dir, "sample-landcover"), before)

    # A second copy while the run is locked: exit 1 with a message naming the lock.
    (run_dir / LOCK_NAME).write_text(
        json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": "now"})
    )
    assert main(["map", str(job_path)]) == 1
    assert "locked by PID" in capsys.readouterr().err


def test_real_model_has_no_seams_between_tile_sizes(tmp_path, map_checkpoint):
    # 2 × 2 tiles of 64 px against the whole area as one tile; halo 32 ≥ the model's window - 1.
    maps = []
    for size in (64, 128):
        job = load_job(_job_file(tmp_path / str(size), SAMPLE_JOB, map_checkpoint,
                                 tile_size=size, halo=32))  # fmt: skip
        s = run_job(job)
        assert s.ok and s.tiles_total == (4 if size == 64 else 1)
        maps.append(_classes(s.run_dir, "sample-landcover"))
    agree = float((maps[0] == maps[1]).mean())
    assert agree >= 0.999, f"tile sizes 64 and 128 agree on only {agree:.4%} of pixels"
    # Control: without a halo the model sees less context at tile edges and the maps differ.
    job = load_job(_job_file(tmp_path / "nohalo", SAMPLE_JOB, map_checkpoint, tile_size=64,
                             halo=0))  # fmt: skip
    run = run_job(job)
    no_halo = _classes(run.run_dir, "sample-landcover")
    assert float((no_halo == maps[1]).mean()) < 0.999
    # ... and the run says so (log and report), with the halo to set.
    assert "set grid.halo: 31 or more" in (run.run_dir / "report.md").read_text()


def test_real_job_on_dask_scheduler_equals_local_cluster(tmp_path, map_checkpoint, dask_scheduler):
    # The crop job (temporal head, probabilities on); a 16 px halo keeps the test quick, and
    # both runs use the same one.
    local = run_job(load_job(_job_file(tmp_path / "local", CROP_JOB, map_checkpoint, halo=16)))
    remote = run_job(
        load_job(_job_file(tmp_path / "remote", CROP_JOB, map_checkpoint, halo=16)),
        scheduler=dask_scheduler,
    )
    assert local.ok and remote.ok and set(remote.products) == {
        "classes", "confidence", "probabilities"
    }  # fmt: skip
    for name, path in local.products.items():
        with rasterio.open(path) as a, rasterio.open(remote.products[name]) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    workers = {r.worker for r in RunManifest.load(remote.run_dir).tiles.values()}
    assert len(workers) == 2
