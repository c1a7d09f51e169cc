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
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from eo_fusion.catalogs import Catalog, NormalizedItem, SearchResult, open_catalog
from eo_fusion.chunk_buffers import BufferedArray, OutputBuffer, buffered, new_buffers, new_token
from eo_fusion.config import JobSpec, ModalitySpec, load_job, modality_spec
from eo_fusion.errors import BadInputError, GridError
from eo_fusion.gdal import GDALOptions
from eo_fusion.grid import Tile, grid_crs, grid_from_aoi, make_tiles
from eo_fusion.modalities import ModalityOptions
from eo_fusion.sources.reader import NullReader, RasterioReader, Reader
from eo_fusion.stack import build_stack, grid_coords, modality_array

if TYPE_CHECKING:
    from eo_fusion.models import LoadedModel, embed, import_smarties, load_model, predict
    from eo_fusion.pipeline.plan import RunPlan

#: Model entry points, imported on first use: importing torch costs ~0.5 GB of memory and
#: seconds of start-up that stacking alone (``api.stack``) should not pay.
_MODEL_NAMES = ("LoadedModel", "embed", "import_smarties", "load_model", "predict")


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        import eo_fusion.models

        return getattr(eo_fusion.models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LoadedModel",
    "ModalitySpec",
    "Product",
    "describe_stack",
    "embed",
    "embed_stack",
    "grid",
    "import_smarties",
    "load_model",
    "modality_array",
    "open_catalog",
    "open_product",
    "plan_job",
    "predict",
    "run_job",
    "search",
    "search_job",
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
    reader: Reader,
    buffers: Mapping[str, OutputBuffer],
) -> dict[str, np.ndarray]:
    """Build one tile, conform each variable to the template's non-spatial coordinates and write
    its core into the variable's whole-grid buffer; returns the views written.

    Conforming matters because a tile may lack a date or band that another tile has; the missing
    parts become NaN (False for masks) instead of changing the array's shape.
    """
    # Built on core + halo and cropped, so filters, cloud-mask dilation and slopes see the same
    # neighbourhood as in a whole-grid build: chunk edges leave no seams.
    ds = build_stack(tile.padded, items, specs, gdal=gdal, reader=reader)
    ys, xs = tile.core_in_padded
    ds = ds.isel(y=ys, x=xs)
    out = {}
    place = (Ellipsis, *tile.core_in_grid)
    for name, var in template.data_vars.items():
        fill = False if var.dtype == bool else np.nan
        if name in ds:
            part = _conform(ds[name], template, var.dims, fill).values
        else:
            shape = [template.sizes[d] for d in var.dims[:-2]] + list(tile.core.shape.yx)
            part = np.full(shape, fill, dtype=var.dtype)
        # A copy of the core (a view of the padded tile would keep it alive until the whole
        # stack is assembled), written straight into the result when it is computed whole.
        out[str(name)] = buffers[str(name)].write(place, part)
    return out


def _conform(part: xr.DataArray, template: xr.Dataset, dims: tuple, fill: Any) -> xr.DataArray:
    """``part`` on the template's non-spatial coordinates (reindexed only where they differ:
    reindexing copies), in the template's dim order."""
    other = {d: template[d].values for d in dims if d not in ("y", "x")}
    same = all(
        d in part.coords and np.array_equal(part[d].values, values) for d, values in other.items()
    )
    if other and not same:
        part = part.reindex(other, fill_value=fill)
    return part.transpose(*dims)


def _tile_task(
    tile: Tile, shared: tuple[Any, ...], buffers: Mapping[str, OutputBuffer]
) -> dict[str, np.ndarray]:
    """One lazy chunk: :func:`_tile_arrays` with the arguments every chunk shares."""
    items, specs, gdal, template, reader = shared
    return _tile_arrays(tile, items, specs, gdal, template, reader, buffers)


#: Per-variable attributes computed from pixel values: a layout built without reading pixels
#: has none of them, and one chunk's values would not describe the whole grid anyway.
_PIXEL_ATTRS = ("valid_fraction", "dtm_filled_pixels")

#: Options that drop dates by their pixel content; the layout keeps every candidate date and each
#: chunk leaves the dates it drops NaN.
_PIXEL_FILTERS = ("min_valid_fraction",)


def _without_pixel_filters(options: ModalityOptions | Mapping[str, Any]) -> Any:
    """``options`` with the pixel-content date filters switched off (0 keeps every date)."""
    if isinstance(options, ModalityOptions):
        off = {k: 0.0 for k in _PIXEL_FILTERS if k in type(options).model_fields}
        return options.model_copy(update=off) if off else options
    return {k: v for k, v in options.items() if k not in _PIXEL_FILTERS}


def _layout(
    grid: GeoBox, items: Mapping[str, list[NormalizedItem]], specs: Mapping[str, ModalitySpec]
) -> xr.Dataset:
    """The stack's variables, bands and dates from metadata alone: ``build_stack`` on a corner of
    ``grid`` through a :class:`NullReader`, which opens no file."""
    corner = grid[: min(4, grid.shape.y), : min(4, grid.shape.x)]
    unfiltered = {
        m: s.model_copy(update={"options": _without_pixel_filters(s.options)})
        for m, s in specs.items()
    }
    template = build_stack(corner, items, unfiltered, reader=NullReader())
    for var in template.data_vars.values():
        for key in _PIXEL_ATTRS:
            var.attrs.pop(key, None)
    return template


def stack(
    items: Mapping[str, SearchResult | Sequence[NormalizedItem]],
    grid: GeoBox,
    modalities: Mapping[str, ModalitySpec | Mapping[str, Any]] | None = None,
    *,
    chunk_size: int = 512,
    halo: int | None = None,
    gdal: GDALOptions | None = None,
    reader: Reader | None = None,
) -> xr.Dataset:
    """A lazy ModalityStack over ``grid``: one dask chunk per ``chunk_size`` tile.

    Building it reads no pixels: the variables, bands and dates come from the items' metadata
    (see :func:`_layout`); each chunk is read only when the dataset is computed (``.compute()``,
    ``.plot``, ``.to_zarr``), through the same :func:`eo_fusion.stack.build_stack` that batch
    jobs use. Per-chunk statistics (``valid_fraction``) are not in the attributes.

    Args:
        items: modality name -> search result (or normalised items).
        grid: target grid (see :func:`grid`).
        modalities: modality name -> options (dict or ModalitySpec); default: defaults for each.
        chunk_size: chunk edge in pixels.
        halo: pixels of context read around each chunk and cropped away (avoids seams of
            filters, slopes, co-registration). Default (``None``): :func:`auto_halo` — 0 for
            Sentinel-2 alone (L2A: SCL masks and medians are per pixel; L1C: the s2cloudless
            mask reads its own context), else 16.
        gdal: GDAL settings of the default reader.
        reader: where pixels come from (default ``RasterioReader(gdal)``; picklable).
    """
    gdal = gdal or GDALOptions()
    reader = RasterioReader(gdal) if reader is None else reader
    by_modality = {m: _items(v) for m, v in items.items()}
    specs = {
        m: modality_spec(m, s) for m, s in (modalities or {m: {} for m in by_modality}).items()
    }
    template = _layout(grid, by_modality, specs)
    _refuse_sub_grids(template)
    tiles = make_tiles(grid, chunk_size, auto_halo(by_modality, specs) if halo is None else halo)
    empty = template.drop_vars(["y", "x"]).isel(y=[], x=[])
    arrays = _lazy_variables(
        tiles, grid.shape.yx, template, (by_modality, specs, gdal, empty, reader)
    )
    coords = {k: v for k, v in template.coords.items() if k not in ("y", "x")}
    coords.update(grid_coords(grid))
    variables = {
        name: xr.DataArray(arrays[str(name)], dims=var.dims, attrs=var.attrs)
        for name, var in template.data_vars.items()
    }
    ds = xr.Dataset(variables, coords=coords)
    ds.attrs.update(template.attrs)
    ds.attrs.update(
        crs=grid_crs(grid).to_wkt(), transform=list(grid.transform)[:6], shape=list(grid.shape.yx)
    )
    # Per-tile provenance (co-registration shifts) differs between chunks; keep it out of the
    # whole-grid dataset rather than present one chunk's record as valid everywhere.
    ds.attrs.pop("coreg", None)
    return ds


def _refuse_sub_grids(template: xr.Dataset) -> None:
    sub_grid = [d for v in template.data_vars.values() for d in v.dims if str(d).endswith(":y")]
    if sub_grid:
        own = sorted(set(sub_grid), key=str)
        raise GridError(
            f"modalities on their own sub-grid ({own}) cannot share lazy chunks",
            fix="stack them separately, or give them the grid's resolution",
        )


#: Modalities whose chunks need no context: their steps are per pixel (read, mask from a class
#: band, median; the reader's padded source windows already feed the resampling kernels), or,
#: for the s2cloudless mask of L1C items, read their own context (the cloud grid's averaging,
#: dilation and shadow search: ``sources/s2cloud``), so the mask does not depend on tiling.
_PIXEL_LOCAL = frozenset({"s2-l2a", "s2-l1c"})

#: The halo of stacks with neighbourhood steps (SAR speckle filter, slopes, co-registration
#: between modalities).
DEFAULT_HALO = 16


def auto_halo(
    items: Mapping[str, Sequence[NormalizedItem]], specs: Mapping[str, ModalitySpec]
) -> int:
    """The lazy stack's halo when none is given: 0 for one Sentinel-2 modality (L2A or L1C)
    whose items are all Sentinel-2, else 16.

    Skipping the halo saves reading (and warping) ``(1 + 2 * 16 / chunk) ** 2 - 1`` of the
    pixels: 13 % at 512 px chunks.
    """
    if len(specs) != 1:
        return DEFAULT_HALO  # co-registration matches features across a neighbourhood
    (name,) = specs
    local = name in _PIXEL_LOCAL and all(it.modality in _PIXEL_LOCAL for it in items.get(name, ()))
    return 0 if local else DEFAULT_HALO


def _lazy_variables(
    tiles: list[Tile],
    grid_shape: tuple[int, int],
    template: xr.Dataset,
    shared: tuple[Any, ...],
) -> dict[str, BufferedArray]:
    """Variable name -> its dask array over the grid, one delayed ``build_stack`` per tile
    (``shared``: the items, specs, GDAL options, empty template and reader of every tile)."""
    rows, cols = max(t.row for t in tiles) + 1, max(t.col for t in tiles) + 1
    names = [str(n) for n in template.data_vars]
    blocks: dict[str, list[list[Any]]] = {n: [[None] * cols for _ in range(rows)] for n in names}
    tokens = {n: new_token() for n in names}
    lead = {n: [template.sizes[d] for d in template[n].dims[:-2]] for n in names}
    layout = {n: (tokens[n], (*lead[n], *grid_shape), template[n].dtype.str) for n in names}
    buffers = dask.delayed(new_buffers, pure=False)(layout)  # a task: fresh buffers per compute
    # The items, specs and reader go into the graph once, as one opaque value: passed to every
    # tile's call, dask would walk (and tokenize) the whole item list once per tile.
    common = dask.delayed(shared, traverse=False)
    for tile in tiles:
        built = dask.delayed(_tile_task, pure=True)(
            dask.delayed(tile, traverse=False), common, buffers
        )
        for n in names:
            blocks[n][tile.row][tile.col] = da.from_delayed(
                built[n], shape=(*lead[n], *tile.core.shape.yx), dtype=template[n].dtype
            )
    # Computing a variable returns the buffer its chunks were written into (chunk_buffers):
    # the output is held once, not as chunks plus their concatenation.
    return {n: buffered(da.block(blocks[n]), tokens[n]) for n in names}


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


def _job(job: JobSpec | str | Path) -> JobSpec:
    return job if isinstance(job, JobSpec) else load_job(Path(job))


def search_job(
    job: JobSpec | str | Path, *, run_date: date | None = None
) -> dict[str, list[NormalizedItem]]:
    """The items of every modality of a job (a JobSpec or a job YAML), as ``eo-fusion map``
    and ``eo-fusion stack`` find them: over the AOI polygon, in the window resolved on
    ``run_date`` (default today, UTC), with each modality's ``max_cloud`` and ``collections``.
    """
    from eo_fusion.pipeline.inputs import search_job as _search_job
    from eo_fusion.pipeline.plan import job_area

    spec = _job(job)
    return _search_job(spec, job_area(spec, run_date or datetime.now(UTC).date()))


def plan_job(
    job: JobSpec | str | Path,
    *,
    run_date: date | None = None,
    items: Mapping[str, Sequence[NormalizedItem]] | None = None,
) -> RunPlan:
    """The run plan ``eo-fusion map`` would execute (grid, tiles and tasks, run id, window).

    ``items`` are the search results per modality; default: :func:`search_job`. Planning reads
    no pixels; ``plan.tasks[i].tile`` and ``.items`` give a tile's grid and inputs for
    :func:`eo_fusion.stack.build_stack`.
    """
    from eo_fusion.pipeline.inputs import search_job as _search_job
    from eo_fusion.pipeline.plan import job_area, plan_run

    spec = _job(job)
    when = run_date or datetime.now(UTC).date()
    area = job_area(spec, when)
    found = _search_job(spec, area) if items is None else items
    return plan_run(spec, when, found, area=area)


def run_job(job: JobSpec | str | Path, **kwargs: Any) -> Any:
    """Run a mapping job (a JobSpec or the path to a job YAML); see ``eo-fusion map --help``.

    Keyword arguments go to :func:`eo_fusion.pipeline.run.run_job` (``force``, ``scheduler``,
    ``run_date``, ``workers``).
    """
    from eo_fusion.pipeline.run import run_job as _run_job

    return _run_job(_job(job), **kwargs)


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


def embed_stack(stack: xr.Dataset, model: LoadedModel | None = None, **kwargs: Any) -> xr.DataArray:
    """Per-patch embeddings ``(dim, y, x)`` of a computed stack (the in-memory ``eo-fusion embed``).

    ``model`` defaults to the bundled model; keyword arguments go to
    :func:`eo_fusion.embed.embed_stack` (``inputs``, ``offset``, ``device``, ``precision``).
    """
    from eo_fusion.embed import embed_stack
    from eo_fusion.models import load_model

    return embed_stack(stack, model if model is not None else load_model(), **kwargs)
