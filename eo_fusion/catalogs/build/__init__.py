"""``eo-fusion catalog build``: a static STAC catalog from ordinary local files.

One concept per module:

* :mod:`.specs` — what an item is made of (:class:`AssetSpec`, :class:`ItemSpec`) and results;
* :mod:`.raster` — a raster file's grid, CRS, bands, tags and ground resolution in metres;
* :mod:`.infer` — modality, band keys and units from metadata, names and options (pure);
* :mod:`.times` — acquisition times from tags, names or options (never a silent midnight);
* :mod:`.las` / :mod:`.osm` — LAS/LAZ headers; OSM extract headers (PBF, XML, bz2/gz);
* :mod:`.paths` — folders -> files -> grouped, dated item specs (:func:`plan_build`);
* :mod:`.items` — one STAC item from a spec; :mod:`.catalog` — the catalog, added to in place.
"""

from eo_fusion.catalogs.build.catalog import build_catalog, write_geoparquet
from eo_fusion.catalogs.build.items import build_item
from eo_fusion.catalogs.build.osm import osm_pbf_bbox
from eo_fusion.catalogs.build.paths import BuildOptions, BuildPlan, plan_build, specs_from_paths
from eo_fusion.catalogs.build.raster import world_file_transform
from eo_fusion.catalogs.build.specs import AssetSpec, BuildResult, ItemSpec
from eo_fusion.catalogs.build.times import datetime_from_name

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
