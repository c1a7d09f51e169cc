"""Compatibility names of :mod:`eo_fusion.catalogs.build` (the catalog builder's package)."""

from eo_fusion.catalogs.build import (
    AssetSpec,
    BuildOptions,
    BuildPlan,
    BuildResult,
    ItemSpec,
    build_catalog,
    build_item,
    datetime_from_name,
    osm_pbf_bbox,
    plan_build,
    specs_from_paths,
    world_file_transform,
    write_geoparquet,
)

__all__ = [
    "AssetSpec",
    "BuildOptions",
    "BuildPlan",
    "BuildResult",
    "ItemSpec",
    "build_catalog",
    "build_item",
    "datetime_from_name",
    "osm_pbf_bbox",
    "plan_build",
    "specs_from_paths",
    "world_file_transform",
    "write_geoparquet",
]
