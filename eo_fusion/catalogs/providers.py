"""Catalog definitions: the YAML files in ``catalogs/`` as validated specs.

The named definitions ship with the package (:data:`eo_fusion.resources.CATALOGS_DIR`, the
repository's ``catalogs/`` folder), so names resolve the same from any folder.

A catalog is a STAC API (``kind: stac-api``), a static catalog on disk (``kind: static``) or a
stac-geoparquet file (``kind: geoparquet``). Each maps eo-fusion modalities to its collection
ids, declares the hosts its assets live on (URL safety) and whether it is local.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from eo_fusion.catalogs.safety import URLPolicy, catalog_roots
from eo_fusion.config import ConfigPath, StrictModel, load_spec
from eo_fusion.errors import ConfigError
from eo_fusion.resources import CATALOGS_DIR, require


class CatalogSpec(StrictModel):
    """One catalog (``catalogs/<name>.yaml``)."""

    name: str = Field(description="short name used on the command line and in jobs")
    title: str = Field(default="", description="human-readable title")
    kind: Literal["stac-api", "static", "geoparquet"] = Field(
        description="STAC API by URL, static catalog on disk, or stac-geoparquet file"
    )
    url: str | None = Field(default=None, description="STAC API root URL (kind stac-api)")
    path: ConfigPath | None = Field(
        default=None, description="catalog.json or .parquet file (kind static/geoparquet)"
    )
    local: bool = Field(
        default=False,
        description="served from this machine/network: loopback/private hosts allowed",
    )
    signing: Literal["none", "planetary-computer"] = Field(
        default="none", description="URL signing applied to asset hrefs of this catalog only"
    )
    allowed_schemes: list[str] = Field(
        default_factory=lambda: ["https", "s3"], description="asset URL schemes accepted"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="asset/API hosts (suffixes) accepted; empty = any"
    )
    roots: list[ConfigPath] = Field(
        default_factory=list,
        description="folders local asset files may lie in (default: the catalog's own folder)",
    )
    modalities: dict[str, list[str]] = Field(
        default_factory=dict, description="modality -> collection ids in this catalog"
    )
    timeout_s: float = Field(default=30.0, gt=0, description="connect/read timeout per request (s)")
    retries: int = Field(
        default=4, ge=0, le=10, description="retries on connection errors, 429, 5xx"
    )
    backoff_s: float = Field(default=0.5, ge=0, description="backoff factor between retries (s)")
    max_pages: int = Field(default=100, ge=1, description="stop after this many result pages")
    item_cap: int = Field(
        default=100_000, ge=1, description="stop after this many items (result marked truncated)"
    )
    search_deadline_s: float = Field(
        default=300.0, gt=0, description="overall limit for one search: all pages and retries (s)"
    )
    page_size: int = Field(default=100, ge=1, le=1000, description="items per page requested")

    @model_validator(mode="after")
    def _where(self) -> CatalogSpec:
        if self.kind == "stac-api" and not self.url:
            raise ValueError("kind stac-api needs 'url'")
        if self.kind != "stac-api" and self.path is None:
            raise ValueError(f"kind {self.kind} needs 'path'")
        return self

    def url_policy(self) -> URLPolicy:
        """The URL policy for this catalog's asset hrefs (and every link and redirect)."""
        if self.roots:
            roots: tuple[str, ...] = tuple(str(Path(r).resolve()) for r in self.roots)
        else:
            roots = catalog_roots(self.path) if self.path is not None else ()
        if self.local:
            # A local catalog may use loopback hosts, http and file paths; when its YAML lists
            # allowed_schemes, only those (a local API serving over http need not allow file).
            if "allowed_schemes" not in self.model_fields_set:
                return URLPolicy.for_local(roots)
            return URLPolicy(
                frozenset(self.allowed_schemes), tuple(self.allowed_hosts), True, roots
            )
        return URLPolicy(frozenset(self.allowed_schemes), tuple(self.allowed_hosts), False, roots)

    def collections_for(self, modality: str) -> list[str]:
        """Collection ids for a modality; error naming the catalog if it has none."""
        if modality not in self.modalities or not self.modalities[modality]:
            raise ConfigError(
                f"catalog '{self.name}' has no collection for modality '{modality}'",
                fix=f"pick one of {sorted(k for k, v in self.modalities.items() if v)} or add "
                f"it under 'modalities' in the catalog YAML",
            )
        return list(self.modalities[modality])


def catalog_names() -> list[str]:
    """Names of the catalogs defined in ``catalogs/*.yaml``."""
    return sorted(p.stem for p in require(CATALOGS_DIR, "the catalog definitions").glob("*.yaml"))


def load_catalog_spec(name_or_path: str | Path) -> CatalogSpec:
    """A catalog spec from a name (``catalogs/<name>.yaml``) or a YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return load_spec(CatalogSpec, p)
    candidate = CATALOGS_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return load_spec(CatalogSpec, candidate)
    raise ConfigError(
        f"unknown catalog '{name_or_path}'",
        fix=f"use one of {', '.join(catalog_names())}, a catalog YAML, a catalog.json, "
        "a .parquet file or an http(s) STAC API URL",
    )
