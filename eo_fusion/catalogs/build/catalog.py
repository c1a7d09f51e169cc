"""A static STAC catalog (+ stac-geoparquet) in a folder, added to or written anew.

A build into a folder that already holds a catalog (``catalog.json``) *adds* to it: its
collections and items are kept, an item of the same id and collection is replaced by the new
one, and a collection's metadata (description, licence, providers) is kept. ``replace=True``
starts afresh (the old catalog's JSON files, and only those, are removed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac

from eo_fusion.catalogs.build.items import build_item
from eo_fusion.catalogs.build.specs import BuildResult, ItemSpec
from eo_fusion.errors import BadInputError

log = logging.getLogger(__name__)


def _existing(out_dir: Path) -> pystac.Catalog | None:
    path = out_dir / "catalog.json"
    if not path.is_file():
        return None
    try:
        return pystac.Catalog.from_file(str(path))
    except (pystac.STACError, ValueError, KeyError, OSError) as e:
        raise BadInputError(
            f"{path} exists but is not a STAC catalog I can add to ({e})",
            fix="choose another --out folder, or pass --replace to overwrite it",
        ) from e


def _old_items(cat: pystac.Catalog) -> tuple[list[pystac.Item], dict[str, dict[str, Any]]]:
    """Items of an existing catalog (asset hrefs made absolute) and its collections' metadata."""
    items: list[pystac.Item] = []
    meta: dict[str, dict[str, Any]] = {}
    for coll in cat.get_children():
        if isinstance(coll, pystac.Collection):
            d = coll.to_dict(include_self_link=False)
            keep = {"description", "license", "title", "providers"}
            meta[coll.id] = {k: d[k] for k in keep if d.get(k) is not None}
            meta[coll.id].update({k: v for k, v in coll.extra_fields.items()})
    for it in cat.get_items(recursive=True):
        d = it.to_dict(include_self_link=False)
        for key, a in it.assets.items():
            d["assets"][key]["href"] = a.get_absolute_href() or a.href
        d["links"] = []
        items.append(pystac.Item.from_dict(d, preserve_dict=False))
    return items, meta


def _json_files(cat: pystac.Catalog) -> list[Path]:
    out = [Path(cat.get_self_href() or "")]
    for child in cat.get_children():
        out.append(Path(child.get_self_href() or ""))
    out += [Path(i.get_self_href() or "") for i in cat.get_items(recursive=True)]
    return [p for p in out if p.suffix == ".json"]


def _merge(
    new: list[pystac.Item], old: list[pystac.Item]
) -> tuple[list[pystac.Item], list[str], list[str]]:
    """(all items, replaced ids, kept ids); an id may not move to another collection."""
    ids = [i.id for i in new]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise BadInputError(f"duplicate item ids: {dupes}", fix="give each item a unique id")
    by_id = {i.id: i for i in new}
    replaced, kept, out = [], [], list(new)
    for it in old:
        if it.id not in by_id:
            kept.append(it.id)
            out.append(it)
        elif by_id[it.id].collection_id == it.collection_id:
            replaced.append(it.id)
        else:
            raise BadInputError(
                f"item {it.id} is already in collection {it.collection_id} of the catalog; "
                f"this build makes it {by_id[it.id].collection_id}",
                fix="give the files another name, build into another folder, or pass --replace",
            )
    return out, replaced, kept


def _collection(cid: str, items: list[pystac.Item], meta: Mapping[str, Any]) -> pystac.Collection:
    meta = dict(meta)
    coll = pystac.Collection(
        id=cid,
        description=meta.pop("description", f"{cid} items"),
        extent=pystac.Extent.from_items(items),
        license=meta.pop("license", "other"),
        title=meta.pop("title", None),
        providers=[pystac.Provider(**p) for p in meta.pop("providers", [])] or None,
        extra_fields={k: v for k, v in meta.items() if k not in ("extent", "links")},
    )
    epoch = datetime.min.replace(tzinfo=UTC)
    for it in sorted(items, key=lambda i: (i.datetime or epoch, i.id)):
        it.set_collection(None)
        coll.add_item(it)
    return coll


def build_catalog(
    specs: Sequence[ItemSpec],
    out_dir: Path,
    *,
    catalog_id: str | None = None,
    title: str = "Local catalog",
    description: str = "Built by eo-fusion catalog build",
    collection_meta: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[], None] | None = None,
    replace: bool = False,
) -> BuildResult:
    """Build items, group them in one Collection per modality, write static STAC + geoparquet.

    The static catalog is self-contained (relative links and asset hrefs) under ``out_dir``;
    ``out_dir/items.parquet`` holds the same items as stac-geoparquet with asset hrefs relative
    to ``out_dir``. See the module doc for adding to an existing catalog. ``catalog_id``
    defaults to the existing catalog's id, else ``local``.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    new = []
    for s in specs:
        new.append(build_item(s))
        if progress:
            progress()
    old_cat = _existing(out_dir)
    old_items, old_meta = ([], {}) if old_cat is None or replace else _old_items(old_cat)
    items, replaced, kept = _merge(new, old_items)
    if old_cat is not None and replace:
        for p in _json_files(old_cat):
            p.unlink(missing_ok=True)
    cid_default = old_cat.id if old_cat is not None and not replace else "local"
    catalog = pystac.Catalog(id=catalog_id or cid_default, description=description, title=title)
    by_coll: dict[str, list[pystac.Item]] = {}
    for it in items:
        by_coll.setdefault(it.collection_id or "items", []).append(it)
    for cid, its in sorted(by_coll.items()):
        meta = {**old_meta.get(cid, {}), **dict((collection_meta or {}).get(cid, {}))}
        catalog.add_child(_collection(cid, its, meta))
    catalog.normalize_hrefs(str(out_dir))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    parquet = out_dir / "items.parquet"
    write_geoparquet(list(catalog.get_items(recursive=True)), parquet, relative_to=out_dir)
    added = [i.id for i in new if i.id not in replaced]
    return BuildResult(
        catalog_json=out_dir / "catalog.json",
        geoparquet=parquet,
        n_items=len(items),
        collections=tuple(sorted(by_coll)),
        added=tuple(added),
        replaced=tuple(replaced),
        kept=tuple(kept),
    )


def write_geoparquet(items: Sequence[pystac.Item], path: Path, *, relative_to: Path) -> None:
    """Write items as stac-geoparquet; asset hrefs made relative to ``relative_to``."""
    import stac_geoparquet.arrow as sga

    dicts = []
    for it in items:
        d = it.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = []
        for a in d["assets"].values():
            href = a["href"]
            abs_href = (
                href
                if os.path.isabs(href)
                else str((Path(it.get_self_href() or ".").parent / href).resolve())
            )
            a["href"] = os.path.relpath(abs_href, relative_to)
        dicts.append(d)
    table = sga.parse_stac_items_to_arrow(dicts)
    tmp = path.with_suffix(".parquet.tmp")
    sga.to_parquet(table, tmp)
    tmp.replace(path)
