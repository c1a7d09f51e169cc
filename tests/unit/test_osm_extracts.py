"""OSM from any common extract: PBF, XML, bz2/gz-compressed XML, clipped extracts (issue 11).

Real data: ``catalogs/sample/data/osm/monaco.osm.pbf`` (© OpenStreetMap contributors, ODbL),
converted in the tests to XML and compressed XML with libosmium's writer and clipped the way a
"simple" extract is (nodes inside a box, every way touching it with all its node references).
"""

from __future__ import annotations

import bz2
import gzip
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import osmium
import pytest
import shapely
from pyproj import Transformer

from eo_fusion.catalogs.local import local_item
from eo_fusion.config import ModalitySpec
from eo_fusion.errors import ReadError
from eo_fusion.grid import grid_from_aoi
from eo_fusion.sources.osm import MAJOR_ROADS, MINOR_ROADS, load_osm, osm_features, read_extract
from eo_fusion.sources.reader import RasterioReader

DATA = Path(__file__).resolve().parents[2] / "catalogs" / "sample" / "data" / "osm"
MONACO = DATA / "monaco.osm.pbf"
WORLD = (-180.0, -90.0, 180.0, 90.0)
WHEN = datetime(2023, 12, 26, tzinfo=UTC)

# A courtyard building (multipolygon with a hole), a building way and a primary road that each
# lack a node, a multipolygon whose inner way is missing, one whose only way lacks a node, and
# a complete land-use way. Coordinates in degrees near (0, 0).
_XML = """<?xml version='1.0' encoding='UTF-8'?>
<osm version="0.6" generator="eo-fusion test">
  <bounds minlat="0" minlon="0" maxlat="0.01" maxlon="0.01"/>
  <node id="1" lat="0.001" lon="0.001" version="1"/>
  <node id="2" lat="0.001" lon="0.004" version="1"/>
  <node id="3" lat="0.004" lon="0.004" version="1"/>
  <node id="4" lat="0.004" lon="0.001" version="1"/>
  <node id="5" lat="0.002" lon="0.002" version="1"/>
  <node id="6" lat="0.002" lon="0.003" version="1"/>
  <node id="7" lat="0.003" lon="0.003" version="1"/>
  <node id="8" lat="0.003" lon="0.002" version="1"/>
  <node id="30" lat="0.006" lon="0.006" version="1"/>
  <node id="31" lat="0.006" lon="0.009" version="1"/>
  <node id="32" lat="0.009" lon="0.009" version="1"/>
  <way id="10" version="1"><nd ref="1"/><nd ref="2"/><nd ref="3"/><nd ref="4"/><nd ref="1"/></way>
  <way id="11" version="1"><nd ref="5"/><nd ref="6"/><nd ref="7"/><nd ref="8"/><nd ref="5"/></way>
  <way id="12" version="1"><nd ref="30"/><nd ref="31"/><nd ref="99"/><nd ref="30"/>
    <tag k="building" v="yes"/></way>
  <way id="13" version="1"><nd ref="1"/><nd ref="98"/><nd ref="32"/>
    <tag k="highway" v="primary"/></way>
  <way id="14" version="1"><nd ref="30"/><nd ref="31"/><nd ref="32"/><nd ref="30"/>
    <tag k="landuse" v="grass"/></way>
  <way id="15" version="1"><nd ref="30"/><nd ref="97"/><nd ref="32"/><nd ref="30"/></way>
  <relation id="20" version="1"><member type="way" ref="10" role="outer"/>
    <member type="way" ref="11" role="inner"/><tag k="type" v="multipolygon"/>
    <tag k="building" v="yes"/></relation>
  <relation id="21" version="1"><member type="way" ref="10" role="outer"/>
    <member type="way" ref="999" role="inner"/><tag k="type" v="multipolygon"/>
    <tag k="landuse" v="forest"/></relation>
  <relation id="22" version="1"><member type="way" ref="15" role="outer"/>
    <tag k="type" v="multipolygon"/><tag k="natural" v="water"/></relation>
</osm>
"""


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".bz2":
        path.write_bytes(bz2.compress(text.encode()))
    elif path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["broken.osm", "broken.osm.bz2", "broken.osm.gz"])
def test_hand_made_extract_holes_and_missing_nodes(tmp_path: Path, name: str, caplog) -> None:
    path = _write(tmp_path / name, _XML)
    with caplog.at_level(logging.WARNING, logger="eo_fusion.sources.osm"):
        feats = osm_features(path, WORLD)
    # Ways 12 (building) and 13 (road) lack a node; relations 21 (missing way 999) and 22
    # (its way lacks node 97) cannot be assembled. Untagged way 15 is not a feature: not counted.
    assert feats.attrs == {"dropped_ways": 2, "dropped_relations": 2}
    assert "dropped 2 way(s)" in caplog.text and str(path) in caplog.text
    assert sorted(zip(feats["layer"], feats["class"], strict=True)) == [
        ("buildings", "yes"),
        ("landuse", "grass"),
    ]
    building = feats.loc[feats["layer"] == "buildings", "geometry"].iloc[0]
    # The courtyard is a hole: 3x3 minus 1x1 milli-degree squares.
    assert len(building.geoms) == 1 and len(building.geoms[0].interiors) == 1
    assert building.area == pytest.approx(9e-6 - 1e-6, rel=1e-9)
    assert building.contains(shapely.Point(0.0015, 0.0015))
    assert not building.contains(shapely.Point(0.0025, 0.0025))


def test_hand_made_extract_rasterised_without_broken_features(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.osm.bz2", _XML)
    item = local_item("broken", "osm", {}, WHEN)
    item = item.__class__(**{**item.__dict__, "other_assets": {"osm": str(path)}})
    grid = grid_from_aoi((0.0, 0.0, 0.01, 0.01), 10.0)
    res = load_osm([item], grid, ModalitySpec(), RasterioReader())
    layers = dict(zip(res.bands, res.data, strict=True))
    assert res.attrs["dropped_ways"] == 2 and res.attrs["dropped_relations"] == 2
    assert layers["osm:roads_major"].max() == 0  # the road missing a node is not drawn
    assert layers["osm:water"].max() == 0  # nor the unassembled water relation
    # Building cover x cell area = the building's area on the grid (hole excluded), within 2 %.
    to_grid = Transformer.from_crs("EPSG:4326", grid.crs.to_wkt(), always_xy=True)
    feats = osm_features(path, WORLD)
    building = feats.loc[feats["layer"] == "buildings", "geometry"].iloc[0]
    area_m2 = shapely.ops.transform(to_grid.transform, building).area
    assert layers["osm:buildings"].sum() * 100.0 == pytest.approx(area_m2, rel=0.02)
    x, y = to_grid.transform(0.0025, 0.0025)  # courtyard centre
    col, row = (int(v) for v in ~grid.transform * (x, y))
    assert layers["osm:buildings"][row, col] == 0.0


def _convert(src: Path, dst: Path) -> Path:
    """Rewrite ``src`` in the format ``dst``'s name says (libosmium's writer)."""
    writer = osmium.SimpleWriter(str(dst))
    try:
        for obj in osmium.FileProcessor(str(src)):
            writer.add(obj)
    finally:
        writer.close()
    return dst


def _summary(feats) -> dict[str, tuple[int, float]]:
    local = feats.to_crs("EPSG:32632")
    size = np.where(local.geom_type.str.contains("Polygon"), local.area, local.length)
    out = {}
    for layer in sorted(set(local["layer"])):
        sel = (local["layer"] == layer).values
        out[layer] = (int(sel.sum()), round(float(size[sel].sum()), 3))
    return out


def test_xml_and_compressed_xml_extracts_read_like_the_pbf(tmp_path: Path) -> None:
    pbf = _summary(osm_features(MONACO, WORLD))
    magic = {"monaco.osm": b"<?xml", "monaco.osm.bz2": b"BZh", "monaco.osm.gz": b"\x1f\x8b"}
    for name, head in magic.items():
        path = _convert(MONACO, tmp_path / name)
        assert path.read_bytes().startswith(head), name  # really XML / bzip2 / gzip
        assert _summary(osm_features(path, WORLD)) == pbf, name
    assert pbf["buildings"][0] > 1200 and pbf["roads_minor"][0] > 500


def test_roads_landuse_buildings_match_pyrosm_but_incomplete_relations() -> None:
    """Reference: pyrosm (the previous reader) on the same PBF."""
    import warnings

    from pyrosm import OSM

    feats = osm_features(MONACO, WORLD).to_crs("EPSG:32632")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        osm = OSM(str(MONACO))
        net, lu, bld = osm.get_network("all"), osm.get_landuse(), osm.get_buildings()
    hw = net["highway"].astype(str)
    for layer, classes in (("roads_major", MAJOR_ROADS), ("roads_minor", MINOR_ROADS)):
        ref = net[hw.isin(classes)].to_crs("EPSG:32632")
        mine = feats[feats["layer"] == layer]
        assert len(mine) == len(ref)
        assert mine.length.sum() == pytest.approx(ref.length.sum(), rel=1e-9)
    mine_lu = feats[feats["layer"] == "landuse"]
    assert len(mine_lu) == len(lu)
    assert mine_lu.area.sum() == pytest.approx(lu.to_crs("EPSG:32632").area.sum(), rel=1e-9)
    # Buildings: where pyrosm draws more, it is (a) a multipolygon relation whose member ways
    # are missing from the extract, drawn by pyrosm from the outer ring alone (courtyard
    # filled), which libosmium cannot assemble and the reader drops and counts, or (b) a
    # type=site relation (not an area in OSM's data model) that pyrosm draws as a building.
    ways = {w.id for w in osmium.FileProcessor(str(MONACO), osmium.osm.WAY)}
    incomplete, sites = set(), set()
    for r in osmium.FileProcessor(str(MONACO), osmium.osm.RELATION):
        if "building" not in r.tags:
            continue
        if r.tags.get("type") != "multipolygon":
            sites.add(r.id)
        elif any(m.type == "w" and m.ref not in ways for m in r.members):
            incomplete.add(r.id)
    assert len(incomplete) == 2 == osm_features(MONACO, WORLD).attrs["dropped_relations"]
    bld = bld.to_crs("EPSG:32632")
    mine_u = shapely.union_all(feats.loc[feats["layer"] == "buildings", "geometry"].values)
    ref_u = shapely.union_all(bld.geometry.values)
    assert mine_u.difference(ref_u).area < 1.0  # m²: nothing drawn that pyrosm lacks
    extra = ref_u.difference(mine_u)
    explained = shapely.union_all(bld.loc[bld["id"].isin(incomplete | sites), "geometry"].values)
    assert extra.area > 1000 and extra.difference(explained).area < 1.0


def _clip_simple(src: Path, dst: Path, box: tuple[float, float, float, float]) -> set[int]:
    """A "simple" clip: nodes inside ``box``; ways with a node inside, with *all* their node
    references; relations with such a way. Returns the ids of the ways kept whole."""
    inside: set[int] = set()
    whole: set[int] = set()
    kept_ways: set[int] = set()
    writer = osmium.SimpleWriter(str(dst))
    try:
        for obj in osmium.FileProcessor(str(src)):  # PBF order: nodes, ways, relations
            if obj.is_node():
                lon, lat = obj.location.lon, obj.location.lat
                if box[0] <= lon <= box[2] and box[1] <= lat <= box[3]:
                    inside.add(obj.id)
                    writer.add(obj)
            elif obj.is_way():
                refs = [n.ref for n in obj.nodes]
                if any(r in inside for r in refs):
                    kept_ways.add(obj.id)
                    writer.add(obj)
                    if all(r in inside for r in refs):
                        whole.add(obj.id)
            elif obj.is_relation() and any(
                m.type == "w" and m.ref in kept_ways for m in obj.members
            ):
                writer.add(obj)
    finally:
        writer.close()
    return whole


def test_clipped_extract_drops_broken_ways_and_draws_nothing_outside(tmp_path: Path) -> None:
    box = (7.418, 43.728, 7.428, 43.736)
    clipped = tmp_path / "monaco-clipped.osm.gz"
    whole = _clip_simple(MONACO, clipped, box)
    feats = osm_features(clipped, WORLD)
    assert feats.attrs["dropped_ways"] > 50  # roads and buildings cut by the box
    # Nothing is drawn from the nodes that remain: every vertex lies inside the clip box.
    coords = shapely.get_coordinates(feats.geometry.values)
    assert (coords[:, 0] >= box[0]).all() and (coords[:, 0] <= box[2]).all()
    assert (coords[:, 1] >= box[1]).all() and (coords[:, 1] <= box[3]).all()
    # The roads are exactly the road ways of the full extract whose nodes all lie in the box.
    full_roads = {
        w.id
        for w in osmium.FileProcessor(str(MONACO), osmium.osm.WAY)
        if w.tags.get("highway") in MAJOR_ROADS | MINOR_ROADS
    }
    assert feats["layer"].str.startswith("roads").sum() == len(full_roads & whole)
    # The stack attrs carry the counts.
    item = local_item("clip", "osm", {}, WHEN)
    item = item.__class__(**{**item.__dict__, "other_assets": {"osm": str(clipped)}})
    res = load_osm([item], grid_from_aoi(box, 10.0), ModalitySpec(), RasterioReader())
    assert res.attrs["dropped_ways"] == feats.attrs["dropped_ways"]


def test_unreadable_extracts_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "truncated.osm.bz2"
    bad.write_bytes(bz2.compress(_XML.encode())[:60])
    with pytest.raises(ReadError, match=r"truncated\.osm\.bz2: not a readable OSM extract"):
        read_extract(bad)
    other = tmp_path / "roads.geojson"
    other.write_text("{}")
    with pytest.raises(ReadError, match="not named like an OSM extract"):
        read_extract(other)
    with pytest.raises(ReadError, match="not found"):
        read_extract(tmp_path / "missing.osm.pbf")


def test_catalog_build_reads_compressed_xml_extracts(tmp_path: Path) -> None:
    """``catalog build`` on an ``.osm.gz``: an osm item the OSM reader loads."""
    from eo_fusion.catalogs import open_catalog
    from eo_fusion.cli import main

    (tmp_path / "data").mkdir()
    _convert(MONACO, tmp_path / "data" / "monaco.osm.gz")
    out = tmp_path / "stac"
    assert main(["catalog", "build", str(tmp_path / "data"), "--out", str(out)]) == 0
    n = open_catalog(out, roots=[tmp_path / "data"]).search("osm").normalized[0]
    nodes = shapely.MultiPoint(
        [
            (o.location.lon, o.location.lat)
            for o in osmium.FileProcessor(str(MONACO), osmium.osm.NODE)
        ]
    )
    x0, y0, x1, y1 = nodes.bounds
    assert n.bbox == pytest.approx((x0, y0, x1, y1), abs=1e-6)  # no header bbox: the nodes'
    grid = grid_from_aoi((7.418, 43.728, 7.428, 43.736), 10.0)
    res = load_osm([n], grid, ModalitySpec(), RasterioReader())
    assert res.data[res.bands.index("osm:buildings")].sum() > 100
