"""STAC metadata for map products: one Item per product file, one Collection per run.

Each Item carries the projection (``proj:code``, ``proj:shape``, ``proj:transform``, ``proj:bbox``
of the job grid), raster band descriptions (``raster:bands``: data type, nodata, resolution, scale),
the classification legend (``classification:classes`` with machine names, titles and colour hints)
and file checksums (``file:checksum`` as a sha256 multihash, ``file:size``). Provenance lives in
``eo_fusion:*`` properties: input item ids per modality, the model card's sha256, the code version,
the job config hash and the run id.

Documents are validated against JSON schemas kept in the repository (``eo_fusion/schemas/``, plus
the STAC core schemas that ship inside pystac), never fetched from the network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
from odc.geo import Geometry
from odc.geo.geobox import GeoBox
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension, Sampling

from eo_fusion.catalogs.validate import validate_stac_dict
from eo_fusion.errors import CatalogError, ProductError
from eo_fusion.files import sha256_file
from eo_fusion.grid import grid_crs
from eo_fusion.pipeline.legend import NODATA_CLASS, NODATA_PERCENT, ClassInfo

COG_MEDIA_TYPE = pystac.MediaType.COG


@dataclass(frozen=True)
class ProductFile:
    """A product file to describe in STAC.

    Attributes:
        kind: ``classes``, ``confidence`` or ``probabilities``.
        path: the COG.
        extra_assets: asset key -> (path, media type, roles, title) that go with it (RAT
            sidecar, quicklook).
        sha256: hex sha256 of ``path`` when the caller has it already (else it is computed).
    """

    kind: str
    path: Path
    extra_assets: Mapping[str, tuple[Path, str, tuple[str, ...], str]] = ()  # type: ignore[assignment]
    sha256: str | None = None


def multihash_sha256(path: Path, digest: str | None = None) -> str:
    """``file:checksum`` value: multihash code 0x12 (sha2-256), length 0x20, then the digest.

    ``digest`` is the file's hex sha256 when the caller has it already (the file is not read).
    """
    return "1220" + (digest or sha256_file(path))


def machine_name(name: str) -> str:
    """Class name as the classification extension wants it: letters, digits, ``-`` and ``_``."""
    slug = re.sub(r"[^0-9A-Za-z_-]+", "_", name.strip()).strip("_")
    return slug or "class"


def _classification(classes: Sequence[ClassInfo]) -> list[Classification]:
    out = [
        Classification.create(
            value=c.value,
            name=machine_name(c.name),
            title=c.name,
            color_hint=c.color.lstrip("#").upper(),
        )
        for c in sorted(classes, key=lambda c: c.value)
    ]
    nodata = Classification.create(
        value=NODATA_CLASS,
        name="nodata",
        title="no data",
        description="outside the AOI, no valid input or failed tile",
    )
    nodata.properties["nodata"] = True
    return [*out, nodata]


def _raster_band(kind: str, resolution: float) -> RasterBand:
    if kind == "classes":
        return RasterBand.create(
            nodata=NODATA_CLASS,
            data_type=DataType.UINT8,
            sampling=Sampling.AREA,
            spatial_resolution=resolution,
        )
    band = RasterBand.create(
        nodata=NODATA_PERCENT,
        data_type=DataType.UINT8,
        sampling=Sampling.AREA,
        spatial_resolution=resolution,
        scale=0.01,
        offset=0.0,
        unit="1",
    )
    return band


def _add_asset(
    item: pystac.Item,
    key: str,
    path: Path,
    media: str,
    roles: tuple[str, ...],
    title: str,
    base: Path,
    sha256: str | None = None,
) -> pystac.Asset:
    asset = pystac.Asset(
        href=str(Path(path).resolve().relative_to(base.resolve()).as_posix()),
        media_type=media,
        roles=list(roles),
        title=title,
    )
    item.add_asset(key, asset)
    fe = FileExtension.ext(asset, add_if_missing=True)
    fe.checksum = multihash_sha256(path, sha256)
    fe.size = Path(path).stat().st_size
    return asset


def build_items(
    products: Sequence[ProductFile],
    *,
    run_id: str,
    grid: GeoBox,
    footprint: Geometry,
    window: tuple[datetime, datetime],
    classes: Sequence[ClassInfo],
    provenance: Mapping[str, Any],
    base_dir: Path,
) -> list[pystac.Item]:
    """One STAC Item per product COG.

    Args:
        products: the product files.
        run_id: used in item ids (``<run_id>-<kind>``).
        grid: the job grid (for ``proj:*``).
        footprint: the mapped area (AOI ∩ grid), any CRS (written in EPSG:4326).
        window: start and end of the data used (UTC).
        classes: the legend.
        provenance: ``eo_fusion:*`` properties (input ids, model sha, code version, config hash).
        base_dir: the folder the item JSON files will be written to (asset hrefs are relative).
    """
    geom_ll = footprint.to_crs("EPSG:4326")
    geometry = json.loads(json.dumps(geom_ll.json))
    resolution = abs(float(grid.resolution.x))
    items = []
    for prod in products:
        item = pystac.Item(
            id=f"{run_id}-{prod.kind}",
            geometry=geometry,
            bbox=list(geom_ll.boundingbox),
            datetime=None,
            start_datetime=window[0],
            end_datetime=window[1],
            properties={
                "title": f"{run_id}: {prod.kind}",
                "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
                "gsd": resolution,
                **{f"eo_fusion:{k}": v for k, v in provenance.items()},
            },
        )
        _set_projection(item, grid)
        RasterExtension.add_to(item)
        ClassificationExtension.add_to(item)
        _add_data_asset(item, prod, classes, resolution, base_dir)
        for key, (path, media, roles, atitle) in dict(prod.extra_assets).items():
            _add_asset(item, key, path, media, roles, atitle, base_dir)
        items.append(item)
    return items


def _set_projection(item: pystac.Item, grid: GeoBox) -> None:
    """``proj:*`` of the job grid: EPSG code (else WKT2), shape, transform, bbox."""
    crs = grid_crs(grid)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = f"EPSG:{crs.epsg}" if crs.epsg else None
    if crs.epsg is None:
        proj.wkt2 = crs.to_wkt()
    proj.shape = list(grid.shape.yx)
    proj.transform = list(grid.transform)[:6]
    proj.bbox = list(grid.extent.boundingbox)


def _add_data_asset(
    item: pystac.Item,
    prod: ProductFile,
    classes: Sequence[ClassInfo],
    resolution: float,
    base_dir: Path,
) -> None:
    """The product COG as asset ``data``, with its raster bands (and classes for a class map)."""
    title = {
        "classes": "class map (uint8, colour table, RAT in .aux.xml)",
        "confidence": "confidence: max class probability in percent",
        "probabilities": "class probabilities in percent, one band per class",
    }[prod.kind]
    asset = _add_asset(
        item, "data", prod.path, COG_MEDIA_TYPE, ("data",), title, base_dir, prod.sha256
    )
    if prod.kind == "classes":
        RasterExtension.ext(asset).bands = [_raster_band("classes", resolution)]
        ClassificationExtension.ext(asset).classes = _classification(classes)
    elif prod.kind == "confidence":
        RasterExtension.ext(asset).bands = [_raster_band("confidence", resolution)]
    else:
        bands = []
        for c in classes:
            b = _raster_band("probabilities", resolution)
            b.properties["description"] = f"probability of {c.name}"
            bands.append(b)
        RasterExtension.ext(asset).bands = bands


def build_collection(
    items: Sequence[pystac.Item], *, run_id: str, description: str, license: str = "other"
) -> pystac.Collection:
    """The run's Collection, with the items added and the extent computed from them."""
    collection = pystac.Collection(
        id=run_id,
        description=description,
        extent=pystac.Extent.from_items(list(items)),
        license=license,
        title=f"eo-fusion map products, run {run_id}",
    )
    collection.add_items(list(items))
    return collection


def save_collection(collection: pystac.Collection, stac_dir: Path) -> list[Path]:
    """Write the collection and its items under ``stac_dir`` (self-contained, relative links).

    Asset hrefs are given relative to ``stac_dir``'s parent (the run folder) when items are built;
    they are rewritten here relative to each item's own JSON file.
    """
    stac_dir = Path(stac_dir)
    run_dir = stac_dir.parent
    for item in collection.get_items():
        for asset in item.assets.values():
            if not Path(asset.href).is_absolute():
                asset.href = str((run_dir / asset.href).resolve())
    collection.normalize_hrefs(str(stac_dir))
    collection.make_all_asset_hrefs_relative()
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    paths = [Path(collection.self_href)]
    paths += [Path(i.self_href) for i in collection.get_items()]
    return paths


# -- validation against the repository's schemas --------------------------------------------------


def validate_stac(doc: Mapping[str, Any], *, source: str = "STAC document") -> list[str]:
    """Validate a STAC Item/Collection dict against its core and extension schemas, offline.

    Uses the same validator and repository-kept schemas as the catalog builder
    (:func:`eo_fusion.catalogs.validate.validate_stac_dict`).

    Returns:
        The schema URIs checked.

    Raises:
        ProductError: a schema is missing from the repository, or the document violates one
            (the message names the document, the schema and the failing path).
    """
    try:
        return validate_stac_dict(doc, source=source)
    except CatalogError as e:
        raise ProductError(
            e.message, fix="report this as a bug; the map products themselves are unaffected"
        ) from e


def validate_stac_files(paths: Sequence[Path]) -> None:
    """Validate STAC JSON files written by :func:`save_collection`."""
    for p in paths:
        validate_stac(json.loads(Path(p).read_text(encoding="utf-8")), source=str(p))
