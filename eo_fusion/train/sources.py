"""Training stacks from a catalog or from saved Zarr stacks (the I/O edge of training).

Scenes are built with the project's own stack stage (:func:`eo_fusion.stack.build_stack`) on the
scene's grid, from the items the catalog's search returns for each modality over the scene: the
same per-modality search as map jobs (:func:`eo_fusion.catalogs.search.search_modalities`), so a
scene's ``time.last_days``, ``max_cloud`` and ``collections`` mean what they mean in a job.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path

import xarray as xr
from odc.geo.geobox import GeoBox
from rich.progress import Progress

from eo_fusion.catalogs import Catalog, NormalizedItem
from eo_fusion.models.config import DataSpec, SceneSpec
from eo_fusion.train.data import Scene, scene_from_stack

log = logging.getLogger(__name__)


def scene_grid(spec: SceneSpec) -> GeoBox:
    """The scene's grid: its bbox in its CRS at its resolution."""
    if spec.shape is not None:
        return GeoBox.from_bbox(spec.bbox, spec.crs, shape=spec.shape)
    return GeoBox.from_bbox(spec.bbox, spec.crs, resolution=spec.resolution)


def find_items(
    catalog: Catalog, spec: SceneSpec, gbox: GeoBox, run_date: date | None = None
) -> dict[str, list[NormalizedItem]]:
    """Normalised items per modality of the scene that intersect its grid and time window.

    ``run_date`` ends a relative window (``time.last_days``); default: today (UTC).
    """
    from eo_fusion.catalogs.search import search_modalities

    window = spec.time.resolve(run_date or datetime.now(UTC).date())
    return search_modalities(catalog, spec.modalities, aoi=gbox.extent, window=window)


def load_scenes(
    data: DataSpec, *, progress: bool = True, run_date: date | None = None
) -> list[Scene]:
    """Build (or read) every training scene of ``data``.

    ``run_date`` ends the scenes' relative windows (``time.last_days``); default: today (UTC).
    """
    from eo_fusion.catalogs import open_catalog

    scenes = []
    with Progress(disable=not progress) as bar:
        job = bar.add_task("building training stacks", total=len(data.scenes) + len(data.zarr))
        if data.scenes:
            catalog = open_catalog(data.catalog)
            for spec in data.scenes:
                scene = _catalog_scene(catalog, spec, run_date)
                if scene is not None:
                    scenes.append(scene)
                bar.advance(job)
        for path in data.zarr:
            ds = xr.open_zarr(path)
            scenes.append(scene_from_stack(ds.load(), Path(path).stem, labels=data.zarr_labels))
            bar.advance(job)
    scenes += _adapter_scenes(data)
    return scenes


def _catalog_scene(catalog: Catalog, spec: SceneSpec, run_date: date | None) -> Scene | None:
    """One scene built from the catalog on its grid; ``None`` when no modality has valid pixels."""
    from eo_fusion.stack import build_stack

    gbox = scene_grid(spec)
    found = find_items(catalog, spec, gbox, run_date)
    empty = [m for m, v in found.items() if not v]
    if empty:
        log.warning("scene %s: no items for %s", spec.name, ", ".join(empty))
    scene = scene_from_stack(
        build_stack(gbox, found, spec.modalities), spec.name, labels=spec.labels
    )
    if not scene.arrays:  # recorded, not silently dropped: the log names the scene
        log.warning("scene %s: no valid pixels in any modality; not used", spec.name)
        return None
    return scene


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
