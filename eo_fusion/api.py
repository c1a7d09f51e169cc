"""The Python API for notebooks and scripts: thin functions over the code the CLI runs.

A session in Jupyter reads as the pipeline does::

    from eo_fusion import api

    cat = api.open_catalog()                        # the embedded sample catalog
    found = api.search(cat, "s2-l1c", bbox=(14.55, 45.87, 14.57, 45.88))
    grid = api.grid((14.55, 45.87, 14.57, 45.88), resolution=10)
    stack = api.stack({"s2-l1c": found}, grid)      # lazy: dask-backed xarray.Dataset
    probs = api.predict(stack.compute(), api.load_model())
    summary = api.run_job("pipelines/sample_landcover.yaml")
    product = api.open_product(summary)

Nothing here is a second implementation: each function forwards to the module that the CLI uses
(``eo_fusion.catalogs``, ``grid``, ``stack``, ``models``, ``pipeline``) and adds only what helps
interactive use (lazy stacks, summaries that print well).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from eo_fusion.catalogs import Catalog, NormalizedItem, SearchResult, open_catalog
from eo_fusion.config import JobSpec, ModalitySpec, load_job
from eo_fusion.errors import BadInputError, GridError
from eo_fusion.gdal import GDALOptions
from eo_fusion.grid import Tile, grid_crs, grid_from_aoi, make_tiles
from eo_fusion.models import LoadedModel, embed, import_smarties, load_model, predict
from eo_fusion.stack import build_stack, modality_array

__all__ = [
    "LoadedModel",
    "ModalitySpec",
    "Product",
    "describe_stack",
    "embed",
    "grid",
    "import_smarties",
    "load_model",
    "modality_array",
    "open_catalog",
    "open_product",
    "predict",
    "run_job",
    "search",
    "stack",
]


def search(catalog: Catalog | str | None, modality: str, **query: Any) -> SearchResult:
    """Search ``catalog`` (a Catalog, a catalog name/path, or ``None`` for the sample catalog).

    Keyword arguments are those of :meth:`eo_fusion.catalogs.Catalog.search` (``bbox`` in
    EPSG:4326 lon/lat, ``datetime``, ``max_cloud`` in percent, ``max_items``, ...).
    """
    cat = catalog if isinstance(catalog, Catalog) else open_catalog(catalog)
    return cat.search(modality, **query)


def grid(aoi: Any, resolution: float = 10.0, crs: Any = "auto", **kwargs: Any) -> GeoBox:
    """Target grid over ``aoi`` (bbox, GeoJSON, WKT or geometry; see :func:`grid_from_aoi`).

    ``resolution`` is in units of the target CRS (metres for the default UTM zone).
    """
    return grid_from_aoi(aoi, resolution, crs, **kwargs)


def _items(value: SearchResult | Sequence[NormalizedItem]) -> list[NormalizedItem]:
    return list(value.normalized) if isinstance(value, SearchResult) else list(value)


def _tile_arrays(
    tile: Tile,
    items: Mapping[str, list[NormalizedItem]],
    specs: Mapping[str, ModalitySpec],
    gdal: GDALOptions,
    template: xr.Dataset,
) -> dict[str, np.ndarray]:
    """Build one tile and conform each variable to the template's non-spatial coordinates.

    Conforming matters because a tile may lack a date or band that another tile has; the missing
    parts become NaN (False for masks) instead of changing the array's shape.
    """
    # Built on core + halo and cropped, so filters, cloud-mask dilation and slopes see the same
    # neighbourhood as in a whole-grid build: chunk edges leave no seams.
    ds = build_stack(tile.padded, items, specs, gdal=gdal)
    ys, xs = tile.core_in_padded
    ds = ds.isel(y=ys, x=xs)
    out = {}
    for name, var in template.data_vars.items():
        fill = False if var.dtype == bool else np.nan
        if name in ds:
            other = {d: template[d].values for d in var.dims if d not in ("y", "x")}
            part = ds[name].reindex(other, fill_value=fill) if other else ds[name]
            out[str(name)] = part.transpose(*var.dims).values.astype(var.dtype, copy=False)
        else:
            shape = [template.sizes[d] if d not in ("y", "x") else 0 for d in var.dims]
            shape[-2:] = tile.core.shape.yx
            out[str(name)] = np.full(shape, fill, dtype=var.dtype)
    return out


def stack(
    items: Mapping[str, SearchResult | Sequence[NormalizedItem]],
    grid: GeoBox,
    modalities: Mapping[str, ModalitySpec | Mapping[str, Any]] | None = None,
    *,
    chunk_size: int = 512,
    halo: int = 16,
    gdal: GDALOptions | None = None,
) -> xr.Dataset:
    """A lazy ModalityStack over ``grid``: one dask chunk per ``chunk_size`` tile.

    The first chunk is built eagerly to learn the variables, bands and dates; the others run
    only when the dataset is computed (``.compute()``, ``.plot``, ``.to_zarr``), each through the
    same :func:`eo_fusion.stack.build_stack` that batch jobs use.

    Args:
        items: modality name -> search result (or normalised items).
        grid: target grid (see :func:`grid`).
        modalities: modality name -> options (dict or ModalitySpec); default: defaults for each.
        chunk_size: chunk edge in pixels.
        halo: pixels of context read around each chunk and cropped away (avoids seams).
        gdal: GDAL settings for every read.
    """
    gdal = gdal or GDALOptions()
    by_modality = {m: _items(v) for m, v in items.items()}
    specs = {
        m: s if isinstance(s, ModalitySpec) else ModalitySpec(**dict(s))
        for m, s in (modalities or {m: {} for m in by_modality}).items()
    }
    tiles = make_tiles(grid, chunk_size, halo)
    template = build_stack(tiles[0].core, by_modality, specs, gdal=gdal)
    sub_grid = [d for v in template.data_vars.values() for d in v.dims if str(d).endswith(":y")]
    if sub_grid:
        own = sorted(set(sub_grid), key=str)
        raise GridError(
            f"modalities on their own sub-grid ({own}) cannot share lazy chunks",
            fix="stack them separately, or give them the grid's resolution",
        )
    rows = max(t.row for t in tiles) + 1
    cols = max(t.col for t in tiles) + 1
    blocks: dict[str, list[list[Any]]] = {
        str(n): [[None] * cols for _ in range(rows)] for n in template.data_vars
    }
    for tile in tiles:
        built = dask.delayed(_tile_arrays, pure=True)(
            tile, by_modality, specs, gdal, template.drop_vars(["y", "x"]).isel(y=[], x=[])
        )
        for name, var in template.data_vars.items():
            shape = [template.sizes[d] for d in var.dims[:-2]] + list(tile.core.shape.yx)
            blocks[str(name)][tile.row][tile.col] = da.from_delayed(
                built[str(name)], shape=tuple(shape), dtype=var.dtype
            )
    coords = {k: v for k, v in template.coords.items() if k not in ("y", "x")}
    coords.update({"y": grid.coords["y"].values, "x": grid.coords["x"].values})
    variables = {
        name: xr.DataArray(
            da.block([[b for b in row] for row in blocks[str(name)]]),
            dims=var.dims,
            attrs=var.attrs,
        )
        for name, var in template.data_vars.items()
    }
    ds = xr.Dataset(variables, coords=coords)
    ds.attrs.update(template.attrs)
    ds.attrs.update(
        crs=grid_crs(grid).to_wkt(), transform=list(grid.transform)[:6], shape=list(grid.shape.yx)
    )
    # Per-tile provenance (co-registration shifts) differs between chunks; keep the first chunk's
    # record out of the whole-grid dataset rather than present it as valid everywhere.
    ds.attrs.pop("coreg", None)
    return ds


def describe_stack(ds: xr.Dataset) -> str:
    """A short text summary of a ModalityStack: grid, and per modality bands, dates and units."""
    lines = [
        f"ModalityStack {ds.sizes.get('y', '?')} x {ds.sizes.get('x', '?')} px, "
        f"transform {ds.attrs.get('transform')}",
    ]
    for name in ds.data_vars:
        if str(name).endswith(":valid"):
            continue
        arr = modality_array(ds, str(name))
        bands = [str(b) for b in arr["band"].values] if "band" in arr.coords else []
        dates = ""
        if "time" in arr.dims:
            times = arr["time"].values
            dates = f", {len(times)} dates {str(times[0])[:10]} … {str(times[-1])[:10]}"
        units = sorted({str(u) for u in np.atleast_1d(arr.attrs.get("units", []))})
        lines.append(f"  {name}: {len(bands)} bands {bands}{dates}; units {units}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Product:
    """A class-map product written by a job: the COG, its STAC Item and the QA report.

    Attributes:
        cog: path of the class COG (uint8, 0 = nodata).
        item: the product's STAC Item (dict), with the classification extension's classes.
        report: the QA report (dict), or ``{}`` when the run wrote none.
    """

    cog: Path
    item: dict[str, Any]
    report: dict[str, Any]

    @property
    def classes(self) -> list[dict[str, Any]]:
        """``[{value, name, color}]`` of the mapped classes (no-data entry left out).

        Read from the Item's ``classification:classes``: ``title`` (or ``name``) and
        ``color_hint`` as ``#rrggbb``.
        """
        for asset in self.item.get("assets", {}).values():
            classes = asset.get("classification:classes")
            if classes:
                return [
                    {
                        "value": c["value"],
                        "name": c.get("title") or c["name"],
                        "color": "#" + c.get("color_hint", "808080").lower(),
                    }
                    for c in classes
                    if not c.get("nodata")
                ]
        return []

    def read(self, band: int = 1) -> xr.DataArray:
        """One band of the COG as an ``(y, x)`` DataArray with the product grid's coordinates."""
        import rasterio
        from odc.geo.xr import wrap_xr

        with rasterio.open(self.cog) as src:
            data = src.read(band)
            gbox = GeoBox(data.shape, src.transform, src.crs.to_wkt())
            nodata = src.nodata
        return wrap_xr(data, gbox, nodata=nodata)

    def _repr_markdown_(self) -> str:
        names = ", ".join(f"{c['value']}: {c['name']}" for c in self.classes)
        return f"**Product** `{self.cog.name}` — classes: {names}"


def run_job(job: JobSpec | str | Path, **kwargs: Any) -> Any:
    """Run a mapping job (a JobSpec or the path to a job YAML); see ``eo-fusion map --help``.

    Keyword arguments go to :func:`eo_fusion.pipeline.run.run_job` (``force``, ``scheduler``,
    ``run_date``, ``workers``).
    """
    from eo_fusion.pipeline.run import run_job as _run_job

    spec = job if isinstance(job, JobSpec) else load_job(Path(job))
    return _run_job(spec, **kwargs)


def open_product(source: Any) -> Product:
    """Open a product from a run summary (``api.run_job``'s result) or the path of its COG.

    The STAC Item is the ``*.json`` under the COG's folder whose assets point at it; the QA report
    is the run folder's ``report.json`` when present.
    """
    import json

    cog = Path(source.products["classes"]) if hasattr(source, "products") else Path(source)
    if not cog.is_file():
        raise BadInputError(f"product COG {cog} not found", fix="run the job first")
    item: dict[str, Any] = {}
    for candidate in sorted(cog.parent.rglob("*.json")):
        try:
            doc = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("type") == "Feature" and any(
            Path(str(a.get("href", ""))).name == cog.name for a in doc.get("assets", {}).values()
        ):
            item = doc
            break
    report: dict[str, Any] = {}
    for candidate in (cog.parent / "report.json", cog.parent.parent / "report.json"):
        if candidate.is_file():
            report = json.loads(candidate.read_text())
            break
    return Product(cog=cog, item=item, report=report)
