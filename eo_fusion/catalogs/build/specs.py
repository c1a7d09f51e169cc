"""What an item of a local catalog is made of: :class:`AssetSpec`, :class:`ItemSpec`, results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

DateTime = datetime  # alias: ItemSpec has a field named `datetime`


@dataclass(frozen=True)
class AssetSpec:
    """One file of an item.

    Attributes:
        key: asset key (also written to the item; never used to build file names).
        path: the file.
        band_keys: registry key per band (``None`` entries: band not placed, named by
            ``band_names``); ``None`` = read from the file's band descriptions.
        band_names: names for bands without a registry key (e.g. an NDVI date).
        roles: STAC roles; non-``data`` assets (metadata, vectors) carry no band metadata.
        units / scale / offset / nodata: encoding of every band (``None``: registry default for
            scale/offset, the file's own nodata).
    """

    key: str
    path: Path
    band_keys: tuple[str | None, ...] | None = None
    band_names: tuple[str, ...] | None = None
    roles: tuple[str, ...] = ("data",)
    title: str | None = None
    units: str | None = None
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None


@dataclass(frozen=True)
class ItemSpec:
    """What an item is made of; the builder reads the files for geometry and grid.

    ``datetime`` or both ``start``/``end`` must be given (UTC). ``crs`` overrides/declares the CRS
    of files that carry none (WKT, EPSG code).
    """

    id: str
    modality: str
    assets: tuple[AssetSpec, ...]
    datetime: DateTime | None = None
    start: DateTime | None = None
    end: DateTime | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    crs: str | None = None
    collection: str | None = None


@dataclass(frozen=True)
class BuildResult:
    """Where a build wrote its outputs.

    Attributes:
        catalog_json / geoparquet: the files written.
        n_items: items in the catalog after the build (kept ones included).
        collections: collection ids in the catalog.
        added / replaced / kept: item ids new in this build, rebuilt over an existing item of
            the same id and collection, and kept from the catalog already in the folder.
    """

    catalog_json: Path
    geoparquet: Path
    n_items: int
    collections: tuple[str, ...]
    added: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
