"""Scheduled use: a relative time window resolved against --run-date, searched in the catalog."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import yaml

from eo_fusion.cli import main
from eo_fusion.config import load_job
from eo_fusion.pipeline.inputs import search_job
from eo_fusion.pipeline.plan import job_area

REPO = Path(__file__).resolve().parents[2]


def _relative_job(tmp_path: Path, days: int) -> Path:
    data = yaml.safe_load((REPO / "pipelines" / "sample_landcover.yaml").read_text())
    data["aoi"]["geojson"] = str(REPO / "catalogs/sample/data/slovenia/bbox.geojson")
    data["time"] = {"last_days": days}
    data["output"]["dir"] = str(tmp_path / "out")
    data.setdefault("dask", {})["processes"] = True  # see test_map_sample._job_file
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_last_days_window_selects_the_dates_before_the_run_date(tmp_path):
    job = load_job(_relative_job(tmp_path, 15))
    area = job_area(job, date(2015, 7, 20))
    assert area.window == (date(2015, 7, 6), date(2015, 7, 20))
    items = search_job(job, area)
    assert [it.id for it in items["s2-l1c"]] == ["slovenia-s2-l1c-20150711"]
    later = search_job(job, job_area(job, date(2015, 9, 12)))
    assert [it.id for it in later["s2-l1c"]] == [
        "slovenia-s2-l1c-20150830",
        "slovenia-s2-l1c-20150909",
    ]


def test_run_date_without_data_fails_clearly(tmp_path, capsys):
    job = _relative_job(tmp_path, 10)
    assert main(["--quiet", "map", str(job), "--run-date", "2020-01-01"]) == 1
    err = capsys.readouterr().err
    assert "no items" in err and "2019-12-23/2020-01-01" in err
    assert main(["map", str(job), "--run-date", "01/01/2020"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
