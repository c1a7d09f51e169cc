"""Offline STAC validation against the schemas kept in the repository (``eo_fusion/schemas``).

The STAC core schemas come from pystac's bundled copies; extension schemas from
``eo_fusion/schemas/**.json`` (matched by ``$id``). Nothing is fetched from the network: a schema
that is not kept locally is an error naming the URI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from eo_fusion.errors import CatalogError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@lru_cache(maxsize=1)
def _registry() -> Any:
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource

    schemas: dict[str, Any] = dict(get_local_schema_cache())
    for path in sorted(SCHEMA_DIR.rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("$id"):
            schemas[str(doc["$id"]).rstrip("#")] = doc
    return Registry().with_resources((u, Resource.from_contents(d)) for u, d in schemas.items())


def schema_uris(doc: Mapping[str, Any]) -> list[str]:
    """Core schema URI of a STAC Item/Collection/Catalog followed by its extension URIs."""
    version = doc.get("stac_version", "1.1.0")
    kind = {"Feature": "item"}.get(str(doc.get("type")), str(doc.get("type", "")).lower())
    core = f"https://schemas.stacspec.org/v{version}/{kind}-spec/json-schema/{kind}.json"
    return [core, *doc.get("stac_extensions", [])]


def validate_stac_dict(doc: Mapping[str, Any], *, source: str = "STAC document") -> list[str]:
    """Validate ``doc`` against its core and extension schemas; return the URIs checked.

    Raises:
        CatalogError: a schema is not kept locally, or the document violates one (the message
            names the document, the schema and the failing JSON path).
    """
    from jsonschema import Draft7Validator

    registry = _registry()
    checked = []
    for uri in schema_uris(doc):
        try:
            schema = registry.contents(uri.rstrip("#"))
        except Exception as e:
            raise CatalogError(
                f"{source}: no local schema for {uri}",
                fix="add the schema JSON (with its $id) under eo_fusion/schemas/",
            ) from e
        errors = sorted(
            Draft7Validator(schema, registry=registry).iter_errors(dict(doc)),
            key=lambda e: list(e.path),
        )
        if errors:
            err = errors[0]
            where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
            raise CatalogError(
                f"{source} is not valid against {uri}: at {where}: {err.message[:300]}",
                fix="fix the builder inputs or report this as a bug",
            )
        checked.append(uri)
    return checked
