"""The notebook API forwards to the pipeline's code: a lazy stack equals an eager build_stack."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eo_fusion import api, chunk_buffers
from eo_fusion.catalogs import SearchResult
from eo_fusion.errors import BandError
from eo_fusion.stack import build_stack


@pytest.fixture(scope="module")
def slovenia(sample_dir):
    aoi = json.loads((sample_dir / "data" / "slovenia" / "bbox.geojson").read_text())
    grid = api.grid(aoi, resolution=10)
    bbox = tuple(grid.extent.to_crs("EPSG:4326").boundingbox)
    cat = api.open_catalog()
    found = {m: api.search(cat, m, bbox=bbox) for m in ("s2-l1c", "dem")}
    return grid, found


def test_search_defaults_to_the_sample_catalog(slovenia):
    _, found = slovenia
    assert isinstance(found["s2-l1c"], SearchResult)
    assert len(found["s2-l1c"]) == 5 and len(found["dem"]) == 1


def test_lazy_stack_matches_eager_build(slovenia):
    grid, found = slovenia
    lazy = api.stack(found, grid, chunk_size=48, halo=16)
    assert lazy["s2-l1c"].chunks is not None and len(lazy["s2-l1c"].chunks[-1]) == 3
    # The reference sees the same 16 px of context around the grid as the chunks do.
    eager = build_stack(
        grid.pad(16),
        {m: r.normalized for m, r in found.items()},
        {m: api.ModalitySpec() for m in found},
    ).isel(y=slice(16, -16), x=slice(16, -16))
    for name in ("s2-l1c", "dem"):
        a, b = lazy[name].values, eager[name].values
        assert a.shape == b.shape
        assert np.allclose(a, b, equal_nan=True, atol=1e-6), name
    text = api.describe_stack(lazy)
    assert "s2-l1c: 13 bands" in text and "102 x 101 px" in text


def test_a_computed_lazy_stack_is_the_buffer_its_chunks_were_written_into(slovenia, monkeypatch):
    grid, found = slovenia
    lazy = api.stack(found, grid, chunk_size=48, halo=16)
    plain = {name: lazy[name].data.map_blocks(np.copy).compute() for name in lazy.data_vars}

    def no_copy(results):
        raise AssertionError("the chunks were concatenated into a second copy of the output")

    monkeypatch.setattr(chunk_buffers, "concatenating_finalize", no_copy)
    computed = lazy.compute()
    for name, values in plain.items():
        np.testing.assert_array_equal(computed[name].values, values)


def test_unknown_modality_is_named(slovenia):
    grid, found = slovenia
    ds = api.stack({"dem": found["dem"]}, grid)
    with pytest.raises(BandError, match="s1-grd"):
        api.modality_array(ds, "s1-grd")


def test_search_result_prints_an_item_table(slovenia):
    _, found = slovenia
    assert repr(found["s2-l1c"]) == "<SearchResult s2-l1c: 5 item(s)>"
    html = found["s2-l1c"]._repr_html_()
    assert "slovenia-s2-l1c-20150711" in html and "<th>cloud_cover</th>" in html


def test_run_job_and_open_product(repo_root, tmp_path):
    from eo_fusion.config import load_job

    job = load_job(repo_root / "pipelines" / "sample_landcover.yaml")
    job = job.model_copy(update={"output": job.output.model_copy(update={"dir": tmp_path})})
    summary = api.run_job(job)
    assert summary.ok
    product = api.open_product(summary)
    assert product.item["type"] == "Feature" and product.report["classes"]
    names = {c["name"] for c in product.classes}
    assert {"forest", "grassland"} <= names and "no data" not in names
    classes = product.read()
    assert classes.odc.geobox.shape == (102, 101) and classes.odc.crs.epsg == 32633
    mapped = {int(v) for v in np.unique(classes.values)} - {255}
    assert mapped <= {c["value"] for c in product.classes}
    # The same product opens from the COG path alone.
    assert api.open_product(product.cog).classes == product.classes
