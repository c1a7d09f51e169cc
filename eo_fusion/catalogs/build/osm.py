"""OSM extracts (``.osm.pbf``, ``.osm``, ``.osm.bz2``, ``.osm.gz``): bbox and timestamp.

The bbox is the file header's ``bounds`` (PBF ``HeaderBBox``, XML ``<bounds>``), else the
extent of its nodes; the timestamp is the header's ``osmosis_replication_timestamp``. Both are
read with pyosmium (libosmium), which decodes all four formats.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from eo_fusion.errors import BadInputError

#: Name endings of the OSM extracts the builder and the reader accept.
OSM_SUFFIXES = (".osm.pbf", ".pbf", ".osm", ".osm.bz2", ".osm.gz")


def is_osm_extract(path: Path) -> bool:
    """Whether ``path`` is named like an OSM extract (see :data:`OSM_SUFFIXES`)."""
    return path.name.lower().endswith(OSM_SUFFIXES)


def media_type(path: Path) -> str:
    """Media type of an OSM extract (PBF or XML; compressed XML keeps the XML type)."""
    name = path.name.lower()
    if name.endswith(".pbf"):
        return "application/vnd.openstreetmap.data+pbf"
    if name.endswith(".bz2"):
        return "application/x-bzip2"
    if name.endswith(".gz"):
        return "application/gzip"
    return "application/vnd.openstreetmap.data+xml"


def osm_header(path: Path) -> tuple[list[float] | None, datetime | None]:
    """(bbox lon/lat from the header or ``None``, replication timestamp or ``None``)."""
    import osmium

    try:
        reader = osmium.io.Reader(str(path), osmium.osm.osm_entity_bits.NOTHING)
    except RuntimeError as e:
        raise BadInputError(
            f"{path}: not a readable OSM extract ({e})", fix="check the file"
        ) from e
    try:
        h = reader.header()
        box = h.box()
        bbox = None
        if box.valid():
            bbox = [box.bottom_left.lon, box.bottom_left.lat, box.top_right.lon, box.top_right.lat]
        stamp = h.get("osmosis_replication_timestamp") or h.get("timestamp") or ""
    finally:
        reader.close()
    when = None
    if stamp:
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            when = None
    return bbox, when


def osm_nodes_bbox(path: Path) -> list[float]:
    """bbox (lon/lat) of the nodes of an extract whose header has none."""
    import osmium

    x0 = y0 = float("inf")
    x1 = y1 = float("-inf")
    node: Any
    for node in osmium.FileProcessor(str(path), osmium.osm.NODE):
        if node.location.valid():
            x0, x1 = min(x0, node.location.lon), max(x1, node.location.lon)
            y0, y1 = min(y0, node.location.lat), max(y1, node.location.lat)
    if x0 > x1:
        raise BadInputError(f"{path}: no nodes found to compute a bbox", fix="check the extract")
    return [x0, y0, x1, y1]


# --- PBF header without libosmium (kept: a dependency-free check of the file's own header) ---


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> Iterable[tuple[int, int, Any]]:
    """Minimal protobuf walker: yields (field number, wire type, value)."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        num, wt = tag >> 3, tag & 7
        val: Any
        if wt == 0:
            val, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            val, i = buf[i : i + n], i + n
        elif wt == 1:
            val, i = buf[i : i + 8], i + 8
        elif wt == 5:
            val, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, val


def _zigzag(v: int) -> int:
    return (v >> 1) ^ -(v & 1)


def osm_pbf_bbox(path: Path) -> list[float] | None:
    """bbox (lon/lat) from the ``HeaderBBox`` of an OSM PBF file, or ``None`` if it has none.

    The header is the first blob of the file (OSM PBF format: 4-byte length, BlobHeader, Blob with
    zlib data, HeaderBlock field 1 = HeaderBBox in nanodegrees).
    """
    with Path(path).open("rb") as fh:
        (hlen,) = struct.unpack(">I", fh.read(4))
        header = dict((n, v) for n, _, v in _fields(fh.read(hlen)))
        if header.get(1) != b"OSMHeader":
            return None
        blob = dict((n, v) for n, _, v in _fields(fh.read(header[3])))
    data = blob.get(1) or (zlib.decompress(blob[3]) if 3 in blob else None)
    if data is None:
        return None
    block = dict((n, v) for n, _, v in _fields(data))
    if 1 not in block:
        return None
    bb = {n: _zigzag(v) * 1e-9 for n, _, v in _fields(block[1])}  # left,right,top,bottom
    return [bb[1], bb[4], bb[2], bb[3]]
