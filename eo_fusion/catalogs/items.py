"""Normalised items: what the rest of eo-fusion sees of a STAC item, provider quirks removed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eo_fusion.bands import BandSpec


@dataclass(frozen=True)
class BandAsset:
    """One band of one item, ready to read.

    Attributes:
        key: band registry key (``s2:B04``).
        asset_key: the STAC asset key it came from (for messages only; never used in file names).
        href: URL or path to read (already signed where the catalog needs signing).
        band_index: 1-based band number inside the file (multi-band files give several BandAssets).
        spec: the band's registry spec with this item's scale/offset/nodata applied.
        crs: the asset's CRS as ``EPSG:n`` or WKT2, if the item declares it.
        transform: the asset's affine transform (6 numbers, GDAL order a,b,c,d,e,f), if declared.
        shape: the asset's (rows, cols), if declared.
    """

    key: str
    asset_key: str
    href: str
    band_index: int
    spec: BandSpec
    crs: str | None = None
    transform: tuple[float, ...] | None = None
    shape: tuple[int, int] | None = None


@dataclass(frozen=True)
class NormalizedItem:
    """A STAC item reduced to what the stacks and models need.

    Attributes:
        id: STAC item id.
        collection: STAC collection id (or ``""``).
        modality: ``s2-l2a``, ``s2-l1c``, ``s1-grd``, ``s1-rtc``, ``dem``, ``dsm``, ``dtm``,
            ``aerial``, ``lidar``, ``osm``, ``labels`` or ``ndvi``.
        datetime: acquisition time (UTC, timezone-aware).
        bbox: (min lon, min lat, max lon, max lat) in EPSG:4326.
        geometry: GeoJSON geometry in EPSG:4326.
        bands: band registry key -> BandAsset.
        properties: the item's STAC properties, unchanged.
        unplaced_assets: asset keys with data that the registry could not place (reported to the
            user; never silently dropped).
        other_assets: asset key -> href for non-band assets (point clouds, OSM extracts, metadata).
    """

    id: str
    collection: str
    modality: str
    datetime: datetime
    bbox: tuple[float, float, float, float]
    geometry: dict[str, Any]
    bands: dict[str, BandAsset]
    properties: dict[str, Any] = field(default_factory=dict)
    unplaced_assets: tuple[str, ...] = ()
    other_assets: dict[str, str] = field(default_factory=dict)
