"""Planning a run: job → area → frozen RunPlan, and the one per-modality search behind map jobs,
``eo-fusion stack``, the API and training scenes (on the embedded sample catalog)."""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime

import pytest

from eo_fusion import api
from eo_fusion.catalogs import open_catalog
from eo_fusion.catalogs.search import search_modalities
from eo_fusion.config import JobSpec, ModalitySpec
from eo_fusion.grid import make_tiles
from eo_fusion.models.config import SceneSpec
from eo_fusion.pipeline.plan import job_area, plan_run, run_id_for
from eo_fusion.train.sources import find_items, scene_grid

CRS = "EPSG:32633"
SLOVENIA = (465181.052, 5079244.891, 466180.531, 5080254.633)  # the sample AOI, EPSG:32633
# Upper-left half of a 900 m square: a 90 × 90 px grid of 3 × 3 tiles of 32 px, of which the six
# with row + col ≤ 2 touch the triangle.
TRIANGLE = "POLYGON((465000 5080000, 465900 5080000, 465000 5079100, 465000 5080000))"


def _job(tmp_path, **over) -> JobSpec:
    data = {
        "name": "plan",
        "aoi": {"wkt": TRIANGLE, "crs": CRS},
        "time": {"last_days": 10},
        "grid": {"resolution": 10, "crs": CRS, "tile_size": 32, "halo": 4},
        "modalities": {},
        "output": {"dir": str(tmp_path)},
        **over,
    }
    return JobSpec.model_validate(data)


def test_plan_run_resolves_what_execution_and_assembly_need(tmp_path):
    job = _job(tmp_path)
    plan = plan_run(job, date(2020, 5, 5), {})
    assert plan.window == (date(2020, 4, 26), date(2020, 5, 5))
    assert plan.time_range == (
        datetime(2020, 4, 26, tzinfo=UTC),
        datetime(2020, 5, 5, 23, 59, 59, tzinfo=UTC),
    )
    assert plan.run_id == run_id_for(job, plan.window)
    assert plan.run_dir == tmp_path / plan.run_id
    assert plan.grid.shape.yx == (90, 90) and plan.grid.crs.epsg == 32633
    assert plan.tiles == tuple(make_tiles(plan.grid, 32, 4))
    expected = ["r000_c000", "r000_c001", "r000_c002", "r001_c000", "r001_c001", "r002_c000"]
    assert [t.tile_id for t in plan.tasks] == expected
    by_id = {t.id: t for t in plan.tiles}
    assert all(task.tile == by_id[task.tile_id] for task in plan.tasks)  # the Tile, not a copy
    assert plan.tasks[0].output_relpath == "tiles/r000_c000.tif"
    assert plan.footprint.crs.epsg == 32633
    assert plan.footprint.area == pytest.approx(0.5 * 900 * 900)
    assert (plan.tile_size, plan.halo, plan.blocksize, plan.on_failure) == (32, 4, 256, "continue")
    # Tasks travel to dask workers: they pickle and compare equal.
    assert pickle.loads(pickle.dumps(plan.tasks[2])) == plan.tasks[2]
    # Another run date of a last_days job is another run of the same config.
    later = plan_run(job, date(2020, 5, 6), {})
    assert later.config_hash == plan.config_hash and later.run_id != plan.run_id
    assert plan_run(job, date(2020, 5, 5), {}) == plan  # a pure function of its inputs


def test_plan_collects_the_items_each_task_reads(tmp_path):
    job = _job(
        tmp_path,
        aoi={"bbox": list(SLOVENIA), "crs": CRS},
        time={"start": "2015-07-01", "end": "2015-09-30"},
        modalities={"s2-l1c": {"max_cloud": 60}, "dem": {}},
    )
    when = date(2026, 1, 1)
    found = api.search_job(job, run_date=when)
    plan = api.plan_job(job, run_date=when, items=found)
    assert plan == api.plan_job(job, run_date=when)  # default items: the same search
    assert plan.inputs == {
        "dem": tuple(sorted(it.id for it in found["dem"])),
        "s2-l1c": (
            "slovenia-s2-l1c-20150711",
            "slovenia-s2-l1c-20150830",
            "slovenia-s2-l1c-20150909",
        ),
    }
    task = plan.tasks[0]
    assert [it.datetime for it in task.items["s2-l1c"]] == sorted(
        it.datetime for it in task.items["s2-l1c"]
    )
    assert plan.time_range[0] == datetime(2015, 7, 1, tzinfo=UTC)


def test_search_modalities_applies_each_modality_option():
    cat = open_catalog()
    aoi = job_area(_job("out", aoi={"bbox": list(SLOVENIA), "crs": CRS}), date(2026, 1, 1)).aoi
    window = (date(2015, 7, 1), date(2015, 9, 30))

    def ids(spec: ModalitySpec) -> list[str]:
        found = search_modalities(cat, {"s2-l1c": spec}, aoi=aoi, window=window)
        return [it.id for it in found["s2-l1c"]]

    every = ids(ModalitySpec())
    assert len(every) == 5 and "slovenia-s2-l1c-20150820" in every  # 100 % cloud
    assert ids(ModalitySpec(max_cloud=60)) == [
        "slovenia-s2-l1c-20150711",
        "slovenia-s2-l1c-20150830",
        "slovenia-s2-l1c-20150909",
    ]
    assert ids(ModalitySpec(collections=["no-such-collection"])) == []
    july = search_modalities(
        cat, {"s2-l1c": ModalitySpec()}, aoi=aoi, window=(date(2015, 7, 6), date(2015, 7, 20))
    )
    assert [it.id for it in july["s2-l1c"]] == ["slovenia-s2-l1c-20150711"]


def test_training_scene_windows_mean_what_they_mean_in_a_job():
    """A scene's ``last_days`` ends on the run date (it was ignored: every date matched)."""
    scene = SceneSpec.model_validate(
        {
            "name": "slovenia",
            "bbox": SLOVENIA,
            "crs": CRS,
            "resolution": 10,
            "time": {"last_days": 15},
            "modalities": {"s2-l1c": {}, "dem": {}},
        }
    )
    found = find_items(open_catalog(), scene, scene_grid(scene), date(2015, 7, 20))
    assert [it.id for it in found["s2-l1c"]] == ["slovenia-s2-l1c-20150711"]
    later = find_items(open_catalog(), scene, scene_grid(scene), date(2015, 9, 12))
    assert [it.id for it in later["s2-l1c"]] == [
        "slovenia-s2-l1c-20150830",
        "slovenia-s2-l1c-20150909",
    ]
