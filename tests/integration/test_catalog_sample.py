"""The embedded sample catalog and the builder: schema-valid items, up to date, searchable."""

from __future__ import annotations

import json
from pathlib import Path

import pystac
import pytest
import rasterio

from eo_fusion.catalogs import open_catalog
from eo_fusion.catalogs.build import build_catalog, osm_pbf_bbox, specs_from_paths
from eo_fusion.catalogs.validate import validate_stac_dict
from eo_fusion.cli import main
from tools.sample_catalog import SLOVENIA_S2_ORDER, sample_specs


def _docs(root: Path) -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.read_text())) for p in sorted(root.rglob("*.json"))]


def test_sample_catalog_is_schema_valid(sample_dir):
    docs = _docs(sample_dir / "stac")
    kinds = {d["type"] for _, d in docs}
    assert kinds == {"Catalog", "Collection", "Feature"}
    exts = set()
    for path, doc in docs:
        exts |= set(validate_stac_dict(doc, source=str(path)))
    assert any("sar" in e for e in exts) and any("pointcloud" in e for e in exts)


def test_sample_catalog_is_up_to_date(sample_dir, tmp_path):
    """Rebuilding from catalogs/sample/data gives exactly the committed items."""
    build_catalog(sample_specs(), tmp_path, catalog_id="eo-fusion-sample")

    def items(root: Path) -> dict[str, dict]:
        out = {}
        for it in pystac.Catalog.from_file(str(root / "catalog.json")).get_items(recursive=True):
            d = it.to_dict(include_self_link=False)
            d.pop("links")
            for key, a in it.assets.items():
                d["assets"][key]["href"] = str(Path(a.get_absolute_href() or "").resolve())
            out[it.id] = d
        return out

    committed, rebuilt = items(sample_dir / "stac"), items(tmp_path)
    assert committed.keys() == rebuilt.keys()
    for key in committed:
        assert committed[key] == rebuilt[key], f"{key} differs: run `make sample-catalog`"


def test_default_catalog_is_sample_and_reads_slovenia(sample_dir):
    cat = open_catalog()
    assert cat.spec.name == "sample"
    result = cat.search("s2-l1c", bbox=(14.55, 45.86, 14.57, 45.88))
    items = result.normalized
    assert [n.id for n in items] == sorted(n.id for n in items)  # by date
    assert len(items) == 5 and all(n.properties["eo_fusion:site"] == "slovenia" for n in items)
    n = items[0]
    # One BandAsset per band of the 13-band file, in the order of the data README.
    for i, name in enumerate(SLOVENIA_S2_ORDER, start=1):
        assert n.bands[f"s2:{name}"].band_index == i
    with rasterio.open(n.bands["s2:B04"].href) as ds:
        assert ds.descriptions[n.bands["s2:B04"].band_index - 1] == "B04"
        assert ds.crs.to_string() == n.bands["s2:B04"].crs
        assert tuple(ds.transform)[:6] == n.bands["s2:B04"].transform


def test_bigearthnet_pairs_and_units():
    cat = open_catalog("sample")
    s2 = {n.id: n for n in cat.search("s2-l2a").normalized}
    s1 = {n.id: n for n in cat.search("s1-grd", properties={"eo_fusion:site": "bigearthnet"})
          .normalized}  # fmt: skip
    assert len(s2) == 5 and len(s1) == 5
    for n in s1.values():
        pair = s2[n.properties["bigearthnet:s2_pair"]]
        assert pair.properties["bigearthnet:s1_pair"] == n.id
        assert n.bands["s1:VV"].spec.units == "dB"
        # The S1 patch lies on the 10 m grid of its S2 pair.
        assert n.bands["s1:VV"].transform == pair.bands["s2:B02"].transform
    b = next(iter(s2.values()))
    assert b.bands["s2:B01"].spec.resolution_m == 60 and b.bands["s2:B05"].spec.resolution_m == 20
    assert b.bands["s2:B02"].spec.scale == 1e-4 and b.bands["s2:B02"].spec.offset == 0


def test_static_and_geoparquet_give_the_same_answers():
    static, parquet = open_catalog("sample"), open_catalog("local")
    for kwargs in (
        {"modality": "ndvi", "datetime": "2016"},
        {"modality": "aerial", "bbox": (-100.0, 46.0, -99.0, 48.0)},
        {"modality": "s2-l1c", "max_cloud": 50},
    ):
        a = [i.id for i in static.search(**kwargs).items]
        b = [i.id for i in parquet.search(**kwargs).items]
        assert a == b and a
        assert static.search(**kwargs).normalized[0].bands.keys() == (
            parquet.search(**kwargs).normalized[0].bands.keys()
        )


def test_cli_build_from_files(sample_dir, tmp_path):
    data = sample_dir / "data"
    out = tmp_path / "stac"
    rc = main(["catalog", "build", str(data / "autzen"), str(data / "osm" / "monaco.osm.pbf"),
               "--out", str(out), "--datetime", "2020-05-01",
               "--crs", str(data / "autzen" / "autzen-srs.wkt")])  # fmt: skip
    assert rc == 0
    docs = _docs(out)
    for path, doc in docs:
        validate_stac_dict(doc, source=str(path))
    items = {d["id"]: d for _, d in docs if d["type"] == "Feature"}
    assert set(items) == {"autzen", "autzen-thin-srs", "monaco.osm"}
    # JPEG + world file + WKT sidecar -> footprint over Eugene, Oregon.
    lon0, lat0, lon1, lat1 = items["autzen"]["bbox"]
    assert -123.1 < lon0 < lon1 < -123.0 and 44.0 < lat0 < lat1 < 44.1
    las = items["autzen-thin-srs"]
    assert las["properties"]["eo_fusion:modality"] == "lidar"
    import laspy

    with laspy.open(data / "autzen" / "autzen-thin-srs.las") as fh:
        assert las["properties"]["pc:count"] == fh.header.point_count
    # The LAS and the photo cover the same area (the data README says they are co-registered).
    assert abs(las["bbox"][0] - lon0) < 0.01 and abs(las["bbox"][3] - lat1) < 0.01
    assert (out / "items.parquet").is_file()
    assert len(open_catalog(out / "items.parquet").search().items) == 3


def test_cli_build_multiband_with_declared_keys(sample_dir, tmp_path):
    tif = sample_dir / "data" / "naip" / "m_4709963_se_14_1_20160816.tif"
    rc = main(["catalog", "build", str(tif), "--out", str(tmp_path), "--modality", "aerial",
               "--bands", "aerial:red,aerial:green,aerial:blue,-"])  # fmt: skip
    assert rc == 0
    # The data lie outside the built catalog folder: declared as a root (docs/security.md).
    n = open_catalog(tmp_path, roots=[sample_dir]).search("aerial").normalized[0]
    assert n.datetime.date().isoformat() == "2016-08-16"  # from the file name
    assert {k: b.band_index for k, b in n.bands.items()} == {
        "aerial:red": 1, "aerial:green": 2, "aerial:blue": 3,
    }  # fmt: skip
    # Issue 11: without options a NAIP-style 4-band uint8 file is inferred as aerial R, G, B, NIR
    # (before, this exited 2 with "cannot tell the modality").
    assert main(["catalog", "build", str(tif), "--out", str(tmp_path / "x")]) == 0
    n = open_catalog(tmp_path / "x", roots=[sample_dir]).search("aerial").normalized[0]
    assert {k: b.band_index for k, b in n.bands.items()} == {
        "aerial:red": 1, "aerial:green": 2, "aerial:blue": 3, "aerial:nir": 4,
    }  # fmt: skip


def test_osm_header_bbox_contains_the_nodes(sample_dir):
    from pyrosm import OSM

    pbf = sample_dir / "data" / "osm" / "pyrosm_test_kotka.osm.pbf"
    bbox = osm_pbf_bbox(pbf)
    assert bbox is not None
    nodes = OSM(str(pbf)).get_data_by_custom_criteria(
        custom_filter={"building": True}, keep_nodes=False, keep_ways=True, keep_relations=False
    )
    x0, y0, x1, y1 = nodes.total_bounds
    assert bbox[0] - 0.01 <= x0 and x1 <= bbox[2] + 0.01
    assert bbox[1] - 0.01 <= y0 and y1 <= bbox[3] + 0.01


def test_specs_need_a_datetime(sample_dir):
    from eo_fusion.catalogs.build import AssetSpec, ItemSpec, build_item
    from eo_fusion.errors import BadInputError

    # A static layer without any time gets an open span from specs_from_paths (noted); a spec
    # without one is still refused by build_item.
    spec = specs_from_paths([sample_dir / "data" / "alexandria" / "dsm.tif"], modality="dsm")[0]
    assert spec.datetime is None and spec.start is not None and spec.end is not None
    bare = ItemSpec(
        "dsm", "dsm", (AssetSpec("dsm", sample_dir / "data" / "alexandria" / "dsm.tif"),)
    )
    with pytest.raises(BadInputError, match="dsm"):
        build_item(bare)


def test_cli_search_intersects_uses_every_feature(tmp_path):
    """``search --intersects`` takes the union of all features of a FeatureCollection."""

    def box(x0: float, y0: float, x1: float, y1: float) -> dict:
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        return {
            "type": "Feature",
            "properties": {},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }

    slovenia, togo = box(14.55, 45.86, 14.57, 45.88), box(1.422, 7.719, 1.4235, 7.720)
    aoi = tmp_path / "two-areas.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [slovenia, togo]}))
    out = tmp_path / "found.json"
    rc = main(["search", "--catalog", "sample", "--modality", "s2-l1c",
               "--intersects", str(aoi), "--out", str(out)])  # fmt: skip
    assert rc == 0
    ids = [f["id"] for f in json.loads(out.read_text())["features"]]
    assert any(i.startswith("slovenia-") for i in ids)
    assert any(i.startswith("togo-") for i in ids)
    # Only the two areas: the Virginia tile (s2-18svg) lies in neither.
    assert not any(i.startswith("s2-18svg") for i in ids)
