"""Training stacks from a catalog or from saved Zarr stacks (the I/O edge of training).

Scenes are built with the project's own stack stage (:func:`eo_fusion.stack.build_stack`) on the
scene's grid, from the items the catalog's search returns for each modality over the scene.
"""

from __future__ import annotations

import logging
from pathlib import Path

import xarray as xr
from odc.geo.geobox import GeoBox
from rich.progress import Progress

from eo_fusion.models.config import DataSpec, SceneSpec
from eo_fusion.train.data import Scene, scene_from_stack

log = logging.getLogger(__name__)


def scene_grid(spec: SceneSpec) -> GeoBox:
    """The scene's grid: its bbox in its CRS at its resolution."""
    if spec.shape is not None:
        return GeoBox.from_bbox(spec.bbox, spec.crs, shape=spec.shape)
    return GeoBox.from_bbox(spec.bbox, spec.crs, resolution=spec.resolution)


def find_items(catalog, spec: SceneSpec, gbox: GeoBox) -> dict[str, list]:
    """Normalised items per modality of the scene that intersect its grid and time window."""
    bbox = tuple(gbox.geographic_extent.boundingbox)
    t = spec.time
    when = f"{t.start or '..'}/{t.end or '..'}" if (t.start or t.end) else None
    return {
        name: list(catalog.search(name, bbox=bbox, datetime=when).normalized)
        for name in spec.modalities
    }


def load_scenes(data: DataSpec, *, progress: bool = True) -> list[Scene]:
    """Build (or read) every training scene of ``data``."""
    from eo_fusion.catalogs import open_catalog
    from eo_fusion.stack import build_stack

    scenes = []
    catalog = open_catalog(data.catalog) if data.scenes else None
    with Progress(disable=not progress) as bar:
        job = bar.add_task("building training stacks", total=len(data.scenes) + len(data.zarr))
        for spec in data.scenes:
            gbox = scene_grid(spec)
            found = find_items(catalog, spec, gbox)
            empty = [m for m, v in found.items() if not v]
            if empty:
                log.warning("scene %s: no items for %s", spec.name, ", ".join(empty))
            ds = build_stack(gbox, found, spec.modalities)
            scene = scene_from_stack(ds, spec.name, labels=spec.labels)
            if scene.arrays:
                scenes.append(scene)
            else:  # recorded, not silently dropped: the log names the scene
                log.warning("scene %s: no valid pixels in any modality; not used", spec.name)
            bar.advance(job)
        for path in data.zarr:
            ds = xr.open_zarr(path)
            scenes.append(scene_from_stack(ds.load(), Path(path).stem, labels=data.zarr_labels))
            bar.advance(job)
    scenes += _adapter_scenes(data)
    return scenes


def _adapter_scenes(data: DataSpec) -> list[Scene]:
    """Scenes from the benchmark dataset adapters (PASTIS, FLAIR-HUB)."""
    from itertools import islice

    from eo_fusion.train.adapters import flair_hub_stacks, pastis_stacks

    out = []
    if data.pastis is not None:
        p = data.pastis
        stacks = pastis_stacks(p.root, folds=p.folds, s1=p.s1)
        for ds in islice(stacks, p.max_patches):
            out.append(scene_from_stack(ds, ds.attrs["source_items"][0], labels="labels"))
    if data.flair_hub is not None:
        f = data.flair_hub
        for ds in islice(flair_hub_stacks(f.root, domain=f.domain), f.max_patches):
            # The other label set, if present, is not an input: drop it.
            other = [v for v in ds.data_vars if str(v).startswith("labels-") and v != f.labels]
            ds = ds.drop_vars([*other, *(f"{v}:valid" for v in other)])
            out.append(scene_from_stack(ds, ds.attrs["source_items"][0], labels=f.labels))
    return out
