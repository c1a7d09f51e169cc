"""The local backend of searches: static catalogs, item collections and stac-geoparquet files.

Every item is loaded once and searched on the client (:meth:`SearchQuery.matches`). Links of a
static catalog are followed through the catalog's URL policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pystac

from eo_fusion.catalogs.diagnostics import drop_feature_problems
from eo_fusion.catalogs.providers import CatalogSpec
from eo_fusion.errors import CatalogError, UnsafeURLError
from eo_fusion.retry import find_cause

__all__ = ["load_items"]


def load_items(spec: CatalogSpec) -> list[pystac.Item]:
    """Every item of the local catalog ``spec`` (asset hrefs made absolute)."""
    path = Path(spec.path or "")
    if not path.exists():
        raise CatalogError(
            f"catalog '{spec.name}': {path} does not exist",
            fix="build it with `eo-fusion catalog build` or fix 'path' in the catalog YAML",
        )
    if spec.kind == "geoparquet" or path.suffix == ".parquet":
        import pyarrow.parquet as pq
        import stac_geoparquet.arrow as sga

        items = []
        for d in sga.stac_table_to_items(pq.read_table(path)):
            drop_feature_problems(d, [])  # assets without href: warned about here
            for a in d.get("assets", {}).values():
                if "://" not in a["href"] and not Path(a["href"]).is_absolute():
                    a["href"] = str((path.parent / a["href"]).resolve())
            items.append(pystac.Item.from_dict(d, preserve_dict=False))
        return items
    if path.suffix == ".json" and json.loads(path.read_text()).get("type") == "FeatureCollection":
        coll = pystac.ItemCollection.from_file(str(path))
        return list(coll)
    # Child and item links of a static catalog are followed through the catalog's policy: a
    # hostile catalog.json cannot make pystac fetch an internal URL or a file outside its roots.
    try:
        cat = pystac.Catalog.from_file(str(path), stac_io=_checked_stac_io(spec))
        items = list(cat.get_items(recursive=True))
    except Exception as e:
        refused = find_cause(e, UnsafeURLError)
        if refused is not None:
            raise refused from e  # pystac wraps it in "does not resolve to a STAC object"
        raise
    for it in items:
        for a in it.assets.values():
            a.href = a.get_absolute_href() or a.href
    return items


def _checked_stac_io(spec: CatalogSpec) -> pystac.StacIO:
    from pystac.stac_io import DefaultStacIO

    policy = spec.url_policy()

    class _CheckedStacIO(DefaultStacIO):
        def read_text_from_href(self, href: str) -> str:
            policy.check(href, what=f"catalog '{spec.name}' link")
            return str(super().read_text_from_href(href))

    return _CheckedStacIO()
