"""Catalogs: find data in STAC catalogs and turn items into band-registry-keyed records.

Start with ``open_catalog("sample").search("s2-l1c", bbox=..., datetime=...)``; see
docs/catalogs.md.
"""

from eo_fusion.catalogs.items import BandAsset, NormalizedItem
from eo_fusion.catalogs.normalize import normalize_item
from eo_fusion.catalogs.results import SearchResult
from eo_fusion.catalogs.search import Catalog, open_catalog

__all__ = [
    "BandAsset",
    "Catalog",
    "NormalizedItem",
    "SearchResult",
    "normalize_item",
    "open_catalog",
]
