"""Training stacks from a catalog or from saved Zarr stacks (the I/O edge of training).

Scenes are built with the project's own stack stage (:func:`eo_fusion.stack.build_stack`) on the
scene's grid; items come from the catalog's search when the catalog layer offers it, or, for a
static STAC catalog on disk (the embedded sample), from walking its items.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import xarray as xr
from odc.geo.geobox import GeoBox
from rich.progress import Progress

from eo_fusion.config import PROJECT_ROOT
from eo_fusion.errors import CatalogError
from eo_fusion.models.config import DataSpec, SceneSpec
from eo_fusion.train.data import Scene, scene_from_stack

log = logging.getLogger(__name__)


def scene_grid(spec: SceneSpec) -> GeoBox:
    """The scene's grid: its bbox in its CRS at its resolution."""
    if spec.shape is not None:
        return GeoBox.from_bbox(spec.bbox, spec.crs, shape=spec.shape)
    return GeoBox.from_bbox(spec.bbox, spec.crs, resolution=spec.resolution)


def _static_items(catalog: str) -> list:
    """Every item of a static STAC catalog (``sample`` = the embedded one), normalised."""
    import pystac

    from eo_fusion.catalogs.normalize import normalize_item

    path = Path(catalog)
    if catalog == "sample":
        path = PROJECT_ROOT / "catalogs" / "sample" / "stac" / "catalog.json"
    if path.is_dir():
        path = path / "catalog.json"
    if not path.is_file():
        raise CatalogError(
            f"catalog '{catalog}' is neither a catalog name with search nor a static catalog",
            fix="pass 'sample' or the path of a catalog.json",
        )
    cat = pystac.Catalog.from_file(str(path))
    return [normalize_item(it, modality=it.collection_id) for it in cat.get_items(recursive=True)]


def _in_time(item, spec: SceneSpec) -> bool:
    t = spec.time
    when = item.datetime if item.datetime.tzinfo else item.datetime.replace(tzinfo=UTC)
    if t.start and when < datetime.fromisoformat(t.start).replace(tzinfo=UTC):
        return False
    return not (t.end and when > datetime.fromisoformat(t.end).replace(tzinfo=UTC))


def find_items(items: Sequence, spec: SceneSpec, gbox: GeoBox) -> dict[str, list]:
    """Items per modality of the scene that intersect its grid (and its time window)."""
    from shapely.geometry import box, shape

    area = box(*gbox.geographic_extent.boundingbox)
    out: dict[str, list] = {}
    for name in spec.modalities:
        hits = [
            it
            for it in items
            if it.modality == name and shape(it.geometry).intersects(area) and _in_time(it, spec)
        ]
        out[name] = hits
    return out


def load_scenes(data: DataSpec, *, progress: bool = True) -> list[Scene]:
    """Build (or read) every training scene of ``data``."""
    from eo_fusion.stack import build_stack

    scenes = []
    items = _static_items(data.catalog) if data.scenes else []
    with Progress(disable=not progress) as bar:
        job = bar.add_task("building training stacks", total=len(data.scenes) + len(data.zarr))
        for spec in data.scenes:
            gbox = scene_grid(spec)
            found = find_items(items, spec, gbox)
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
