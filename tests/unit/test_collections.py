"""The collections users search: catalog defaults, Copernicus DEM on both providers, and the
map job's refusal of a modality that found nothing."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path

import pytest
import yaml

from eo_fusion.catalogs.normalize import VERTICAL_DATUM_PROPERTY, normalize_item
from eo_fusion.catalogs.providers import load_catalog_spec
from eo_fusion.catalogs.results import EmptySearchError
from eo_fusion.config import load_job
from eo_fusion.pipeline.inputs import search_window
from eo_fusion.pipeline.plan import job_aoi

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests/fixtures/stac"


def test_catalog_defaults():
    es = load_catalog_spec("earth-search")
    assert es.collections_for("s2-l2a") == ["sentinel-2-c1-l2a"]  # Collection 1 by default
    assert es.collections_for("landsat-c2-l2") == ["landsat-c2-l2"]
    pc = load_catalog_spec("planetary-computer")
    assert pc.collections_for("landsat-c2-l2") == ["landsat-c2-l2"]
    assert pc.collections_for("s1-rtc") == ["sentinel-1-rtc"]
    for spec in (es, pc, load_catalog_spec("cdse")):
        assert spec.collections_for("dem")[0].startswith("cop-dem-glo-30")
    # Landsat asset hosts are allowed where the providers put them.
    assert "landsatlook.usgs.gov" in es.allowed_hosts
    assert "blob.core.windows.net" in pc.allowed_hosts


@pytest.mark.parametrize("collection", ["cop-dem-glo-30", "cop-dem-glo-90"])
def test_copernicus_dem_on_both_providers(collection):
    pc = json.loads(
        (FIX / "synthetic_providers/planetary-computer__cop-dem-glo-30.json").read_text()
    )
    es = json.loads((FIX / "recorded/earth-search-v1__cop-dem-glo-30.json").read_text())[
        "features"
    ][0]
    es = copy.deepcopy(es)
    es["assets"] = {"data": {"href": "https://copernicus-dem-90m.s3.amazonaws.com/x.tif",
                             "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                             "roles": ["data"]}}  # fmt: skip
    for f in (pc, es):
        f = copy.deepcopy(f)
        f["collection"] = collection
        n = normalize_item(f)
        assert n.modality == "dem"
        assert set(n.bands) == {"elevation:dem"}
        assert n.bands["elevation:dem"].spec.units == "m"
        # Copernicus DEM heights are orthometric over the EGM2008 geoid (provider docs).
        assert n.properties[VERTICAL_DATUM_PROPERTY] == "EGM2008"


def _job(tmp_path: Path, **time) -> Path:
    data = yaml.safe_load((REPO / "pipelines" / "sample_landcover.yaml").read_text())
    data["aoi"]["geojson"] = str(REPO / "catalogs/sample/data/slovenia/bbox.geojson")
    data["output"]["dir"] = str(tmp_path / "out")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_map_job_refuses_a_modality_with_zero_items(tmp_path: Path):
    job = load_job(_job(tmp_path))
    with pytest.raises(EmptySearchError, match=r"the catalog 'sample' has no items for ") as e:
        search_window(job, job_aoi(job.aoi), (date(2015, 9, 30), date(2015, 7, 1)), require=True)
    for modality in ("s2-l1c", "dem"):  # every empty modality is named, with its causes
        assert f"{modality} (the date range is reversed" in str(e.value)
    assert "over the AOI in 2015-09-30/2015-07-01" in str(e.value)
    assert e.value.exit_code == 1
