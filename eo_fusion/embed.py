"""Embedding maps (``eo-fusion embed JOB.yaml``, :func:`embed_stack`): encoder features over an AOI.

Per-patch embeddings: the encoder runs on windows of ``window`` px (the model card's inference
window) anchored on whole multiples of ``window / 2`` of the job grid (as the map job's sliding
windows are), and the normed token outputs are blended with a tent weight where windows overlap.
Tiles are cut from the same anchored grid; with ``tile_size`` and ``halo`` multiples of the patch
size and ``halo >= window``, every window that touches a tile's core lies inside its padded read,
so the result does not depend on the tile size and has no seams (tested).

Outputs in ``<output.dir>/<name>-<12 hex>/``: ``embeddings.zarr`` (array ``embedding``
``(D, rows, cols)`` float32 at patch resolution, one chunk per tile, with ``x``/``y`` patch
centre coordinates, CRS and transform as attributes), ``embeddings.tif`` (COG, on request),
``embed.json`` (tile manifest with sha256 per tile: a rerun resumes) and ``item.json`` (a STAC
Item with projection and file information, validated offline).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from odc.geo.geobox import GeoBox
from pydantic import Field, model_validator

from eo_fusion.config import (
    AOISpec,
    ConfigPath,
    GridSpec,
    JobSpec,
    ModalitySpec,
    StrictModel,
    TimeSpec,
    load_spec,
    spec_hash,
)
from eo_fusion.errors import BadInputError
from eo_fusion.files import atomic_write_text
from eo_fusion.grid import Tile, grid_crs
from eo_fusion.models.card import ModelCard
from eo_fusion.models.encoder import SpectralViT

log = logging.getLogger(__name__)

STORE = "embeddings.zarr"
MANIFEST = "embed.json"


class EmbedOutputSpec(StrictModel):
    """Where and how embeddings are written."""

    dir: ConfigPath = Field(Path("out/embed"), description="output folder (run folders inside)")
    cog: bool = Field(False, description="also write the embeddings as a COG (one band per dim)")


class EmbedJobSpec(StrictModel):
    """An embedding job: an AOI, a window, modalities and a model -> per-patch embeddings."""

    name: str = Field(description="job name", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = Field("", description="shown in the STAC Item")
    catalog: str = Field("sample", description="catalog name or path")
    aoi: AOISpec
    time: TimeSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    grid: GridSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    modalities: dict[str, ModalitySpec] = Field(description="modality name -> options")
    checkpoint: ConfigPath | None = Field(None, description="model folder; default: bundled")
    inputs: dict[str, list[str]] | None = Field(
        None, description="modality -> band keys; default: every band the stacks have"
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="where to run")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="autocast")
    workers: int = Field(1, ge=1, description="dask threads (tiles at once)")
    output: EmbedOutputSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _single_modalities(self) -> EmbedJobSpec:
        series = [m for m, s in self.modalities.items() if s.mode == "timeseries"]
        if series:
            raise ValueError(f"embeddings take composites; set mode: composite for {series}")
        return self


def load_embed_job(path: Path) -> EmbedJobSpec:
    """Load and validate an embedding job YAML file."""
    return load_spec(EmbedJobSpec, path)


# -- the core: one normalised array -> patch embeddings ------------------------------------------


def _tent(n: int) -> np.ndarray:
    w = 1.0 - np.abs(np.arange(n) + 0.5 - n / 2) / (n / 2)
    return np.outer(w, w).astype(np.float32) + 1e-3


def _starts(n: int, offset: int, window: int, stride: int) -> list[int]:
    """Local starts of the windows on the global lattice ``k * stride`` that overlap
    ``[offset, offset + n)``."""
    g = -(-(offset - window + 1) // stride) * stride
    out = []
    while g < offset + n:
        out.append(g - offset)
        g += stride
    return out


def embed_array(
    encoder: SpectralViT,
    arr: np.ndarray,
    keys: Sequence[str],
    *,
    window: int,
    offset: tuple[int, int] = (0, 0),
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Per-patch embeddings ``(D, H/p, W/p)`` of a normalised ``(C, H, W)`` array (NaN = none).

    ``offset`` is the global pixel index of ``arr[..., 0, 0]`` (multiples of the patch size);
    windows sit on global multiples of ``window / 2``; outside ``arr`` they see no data.
    """
    from eo_fusion.devices import autocast

    p = int(encoder.cfg.patch_size)
    h, w = arr.shape[-2:]
    if h % p or w % p or offset[0] % p or offset[1] % p or window % (2 * p):
        raise BadInputError(
            f"array {h}×{w} at offset {offset} or window {window} does not fit patch size {p}",
            fix="use tile_size and halo that are multiples of the patch size",
        )
    stride = window // 2
    sy, sx = _starts(h, offset[0], window, stride), _starts(w, offset[1], window, stride)
    py0, px0 = -min(sy[0], 0), -min(sx[0], 0)
    pad = [(0, 0), (py0, max(0, sy[-1] + window - h)), (px0, max(0, sx[-1] + window - w))]
    padded = np.pad(arr, pad, constant_values=np.nan)  # no data: masked by the encoder
    n = window // p
    tent = torch.from_numpy(_tent(n))
    acc = torch.zeros((encoder.dim, padded.shape[1] // p, padded.shape[2] // p))
    wsum = torch.zeros(acc.shape[1:])
    spots = [(y + py0, x + px0) for y in sy for x in sx]
    device = device or torch.device("cpu")
    encoder.eval()
    with torch.inference_mode():
        for i in range(0, len(spots), batch_size):
            chunk = spots[i : i + batch_size]
            xb = torch.from_numpy(
                np.stack([padded[:, y : y + window, x : x + window] for y, x in chunk])
            ).to(device)
            with autocast(device, dtype):
                tok, _ = encoder(xb, keys)
            tok = tok.float().cpu().reshape(len(chunk), n, n, -1).permute(0, 3, 1, 2)
            for (y, x), t in zip(chunk, tok, strict=True):
                acc[:, y // p : y // p + n, x // p : x // p + n] += t * tent
                wsum[y // p : y // p + n, x // p : x // p + n] += tent
    out = acc / wsum
    return out[:, py0 // p : (py0 + h) // p, px0 // p : (px0 + w) // p].numpy()


def normalised_input(
    ds: xr.Dataset, card: ModelCard, inputs: Mapping[str, Sequence[str]] | None
) -> tuple[np.ndarray, list[str]]:
    """The stack's input bands standardised with the card's statistics: ``(C, H, W)``, keys."""
    from eo_fusion.models.predict import normalization
    from eo_fusion.stack import modality_array

    parts, keys = [], []
    mods = inputs or {
        str(m): [str(b) for b in ds[f"{m}:band"].values]
        for m in ds.data_vars
        if "modality" in ds[m].attrs
    }
    for mod, want in mods.items():
        arr = modality_array(ds, mod).sel(band=list(want))
        vals = np.asarray(arr.values, np.float32)
        for i, k in enumerate(want):
            norm = normalization(card, mod, k)
            mean, std = norm.mean, norm.std
            vals[i] = (vals[i] - mean) / std
        parts.append(vals)
        keys += list(want)
    if not parts:
        raise BadInputError("the stack has no input modality", fix="check the job's modalities")
    return np.concatenate(parts, axis=0), keys


# -- a tile, a run ----------------------------------------------------------------------------


def embed_stack(
    ds: xr.Dataset,
    model: Any,
    *,
    inputs: Mapping[str, Sequence[str]] | None = None,
    offset: tuple[int, int] = (0, 0),
    device: str = "auto",
    precision: str = "auto",
) -> xr.DataArray:
    """In-memory embeddings of a ModalityStack: ``(dim, y, x)`` at patch resolution.

    ``model`` is a :class:`~eo_fusion.models.checkpoint.LoadedModel`; ``offset`` the global pixel
    index of the stack's first pixel on its anchored grid (0, 0 for a whole grid).
    """
    from eo_fusion.devices import autocast_dtype, resolve_device

    dev = resolve_device(device)
    arr, keys = normalised_input(ds, model.card, inputs)
    window = int(model.card.window)
    encoder = model.encoder.to(dev)
    emb = embed_array(
        encoder,
        arr,
        keys,
        window=window,
        offset=offset,
        device=dev,
        dtype=autocast_dtype(dev, precision),
    )
    p = int(encoder.cfg.patch_size)
    ys = np.asarray(ds["y"].values).reshape(-1, p).mean(axis=1)
    xs = np.asarray(ds["x"].values).reshape(-1, p).mean(axis=1)
    return xr.DataArray(
        emb,
        dims=("dim", "y", "x"),
        coords={"y": ys, "x": xs},
        attrs={"crs": ds.attrs.get("crs"), "patch_size": p},
    )


def _check_tiling(job: EmbedJobSpec, patch: int, window: int) -> None:
    g = job.grid
    if g.tile_size % patch or g.halo % patch or g.halo < window:
        raise BadInputError(
            f"grid.tile_size {g.tile_size} and grid.halo {g.halo} must be multiples of the patch "
            f"size {patch}, and halo at least the window {window} (for seam-free tiles)",
            fix=f"e.g. tile_size: {max(window, g.tile_size // window * window)}, halo: {window}",
        )


def embed_tile(tile: Tile, items: Any, job: EmbedJobSpec, model: Any) -> np.ndarray:
    """Embeddings of one tile's core: ``(D, core rows / p, core cols / p)``."""
    from eo_fusion.pipeline.plan import items_for_tile
    from eo_fusion.stack import build_stack

    ds = build_stack(tile.padded, items_for_tile(tile.padded, items), job.modalities)
    gy, gx = tile.core_in_grid[0].start, tile.core_in_grid[1].start
    halo = tile.core_in_padded[0].start
    emb = embed_stack(
        ds,
        model,
        inputs=job.inputs,
        offset=(gy - halo, gx - halo),
        device=job.device,
        precision=job.precision,
    )
    p = int(model.encoder.cfg.patch_size)
    (cy, cx) = tile.core_in_padded
    return emb.values[:, cy.start // p : cy.stop // p, cx.start // p : cx.stop // p]


def _tile_sha(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype=np.float32).tobytes()).hexdigest()


def _open_store(path: Path, shape: tuple[int, int, int], chunk: int, attrs: dict[str, Any]):  # type: ignore[no-untyped-def]
    import zarr

    group = zarr.open_group(str(path), mode="a")
    if "embedding" not in group:
        arr = group.create_array(
            "embedding",
            shape=shape,
            chunks=(shape[0], chunk, chunk),
            dtype="float32",
            fill_value=np.nan,
        )
        arr.attrs.update(attrs)
    return group["embedding"]


def run_embed_job(job: EmbedJobSpec, *, force: bool = False) -> dict[str, Any]:
    """Run an embedding job; returns a summary (run folder, files, tile counts)."""
    from eo_fusion.grid import grid_from_aoi, make_tiles
    from eo_fusion.models.checkpoint import load
    from eo_fusion.pipeline.inputs import search_window
    from eo_fusion.pipeline.plan import job_aoi

    model = load(job.checkpoint)
    p = int(model.encoder.cfg.patch_size)
    window = int(model.card.window)
    _check_tiling(job, p, window)
    aoi = job_aoi(job.aoi)
    grid = grid_from_aoi(aoi, job.grid.resolution, job.grid.crs)
    grid = _pad_to(grid, p)
    window_dates = job.time.resolve(datetime.now(UTC).date())
    digest = hashlib.sha256((spec_hash(job) + str(window_dates)).encode()).hexdigest()
    run_dir = Path(job.output.dir) / f"{job.name}-{digest[:12]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    map_job = JobSpec.model_validate(
        {
            "name": job.name,
            "catalog": job.catalog,
            "aoi": job.aoi,
            "time": job.time,
            "modalities": job.modalities,
        }
    )
    items = search_window(map_job, aoi, window_dates)
    tiles = make_tiles(grid, job.grid.tile_size, job.grid.halo)
    manifest = _load_manifest(run_dir, digest, force)
    todo = [t for t in tiles if not _verified(manifest, run_dir, t, p)]
    _embed_tiles(todo, items, job, model, grid, run_dir, manifest)
    files = {"zarr": str(run_dir / STORE)}
    if job.output.cog:
        files["cog"] = str(_write_cog(run_dir, grid, p))
    item = _write_item(run_dir, job, grid, p, aoi, window_dates, files)
    return {
        "run_dir": run_dir,
        "tiles": len(tiles),
        "computed": len(todo),
        "item": item,
        "files": files,
    }


def _embed_tiles(todo, items, job, model, grid, run_dir, manifest) -> None:  # type: ignore[no-untyped-def]
    """Embed tiles in waves of dask tasks; each tile's core goes into its chunks of the Zarr."""
    import dask

    p = int(model.encoder.cfg.patch_size)
    window = int(model.card.window)
    store = None
    for start in range(0, len(todo), job.workers):
        wave = todo[start : start + job.workers]
        delayed = [dask.delayed(embed_tile)(t, items, job, model) for t in wave]
        outs = dask.compute(*delayed, scheduler="threads", num_workers=job.workers)
        for t, emb in zip(wave, outs, strict=True):
            if store is None:
                shape = (emb.shape[0], grid.shape.y // p, grid.shape.x // p)
                attrs = _store_attrs(grid, p, job, model, window)
                store = _open_store(run_dir / STORE, shape, job.grid.tile_size // p, attrs)
            sy, sx = t.core_in_grid
            store[:, sy.start // p : sy.stop // p, sx.start // p : sx.stop // p] = emb
            manifest["tiles"][t.id] = {"state": "done", "sha256": _tile_sha(emb)}
        atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _pad_to(grid: GeoBox, p: int) -> GeoBox:
    """The grid grown (right/bottom) to whole patches."""
    h, w = grid.shape.yx
    return GeoBox((-(-h // p) * p, -(-w // p) * p), grid.transform, grid.crs)


def _store_attrs(grid: GeoBox, p: int, job: EmbedJobSpec, model: Any, window: int) -> dict:
    t = grid.transform
    return {
        "crs": grid_crs(grid).to_wkt(),
        "transform": [t.a * p, t.b, t.c, t.d, t.e * p, t.f],
        "patch_size": p,
        "window": window,
        "model": model.card.name,
        "model_sha256": model.card.weights.sha256 if model.card.weights else None,
        "dims": ["dim", "y", "x"],
        "job": job.name,
    }


def _load_manifest(run_dir: Path, digest: str, force: bool) -> dict[str, Any]:
    import shutil

    path = run_dir / MANIFEST
    if path.is_file() and not force:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("run_hash") == digest:
            return data
    shutil.rmtree(run_dir / STORE, ignore_errors=True)
    return {"run_hash": digest, "tiles": {}}


def _verified(manifest: dict[str, Any], run_dir: Path, tile: Tile, p: int) -> bool:
    rec = manifest["tiles"].get(tile.id)
    if not rec or rec.get("state") != "done" or not (run_dir / STORE).exists():
        return False
    import zarr

    arr = zarr.open_array(str(run_dir / STORE / "embedding"), mode="r")
    sy, sx = tile.core_in_grid
    got = np.asarray(arr[:, sy.start // p : sy.stop // p, sx.start // p : sx.stop // p])
    return _tile_sha(got) == rec.get("sha256")


def _write_cog(run_dir: Path, grid: GeoBox, p: int) -> Path:
    import rasterio
    import zarr
    from affine import Affine
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    arr = np.asarray(zarr.open_array(str(run_dir / STORE / "embedding"), mode="r")[:])
    t = grid.transform
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": arr.shape[0],
        "height": arr.shape[1],
        "width": arr.shape[2],
        "crs": grid_crs(grid).to_wkt(),
        "transform": Affine(t.a * p, t.b, t.c, t.d, t.e * p, t.f),
        "nodata": np.nan,
    }
    out, tmp = run_dir / "embeddings.tif", run_dir / ".embeddings.tmp.tif"
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(arr)
        with mem.open() as src:
            cog_translate(src, str(tmp), cog_profiles.get("deflate"), quiet=True, in_memory=True)
    tmp.replace(out)
    return out


def _write_item(run_dir, job, grid, p, aoi, window, files) -> Path:  # type: ignore[no-untyped-def]
    import pystac
    import shapely.geometry
    from pystac.extensions.projection import ProjectionExtension

    from eo_fusion.pipeline.stac_products import validate_stac

    geom = aoi.to_crs("EPSG:4326").geom
    start = datetime.combine(window[0], datetime.min.time(), UTC) if window[0] else None
    last = datetime.max.time().replace(microsecond=0)
    end = datetime.combine(window[1], last, UTC) if window[1] else None
    item = pystac.Item(
        id=f"{run_dir.name}-embeddings",
        geometry=shapely.geometry.mapping(geom),
        bbox=list(geom.bounds),
        datetime=None if start and end else datetime.now(UTC),
        start_datetime=start,
        end_datetime=end,
        properties={"description": job.description or f"{job.name} embeddings"},
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    t = grid.transform
    proj.code = f"EPSG:{grid_crs(grid).epsg}" if grid_crs(grid).epsg else None
    proj.shape = [grid.shape.y // p, grid.shape.x // p]
    proj.transform = [t.a * p, t.b, t.c, t.d, t.e * p, t.f]
    item.add_asset(
        "embeddings",
        pystac.Asset(
            href=f"./{STORE}",
            media_type="application/vnd+zarr",
            roles=["data"],
            title="per-patch embeddings",
        ),
    )
    if "cog" in files:
        item.add_asset(
            "cog",
            pystac.Asset(href="./embeddings.tif", media_type=pystac.MediaType.COG, roles=["data"]),
        )
    doc = json.loads(json.dumps(item.to_dict(include_self_link=False)))  # tuples -> lists
    validate_stac(doc, source=f"{run_dir / 'item.json'}")
    atomic_write_text(run_dir / "item.json", json.dumps(doc, indent=1) + "\n")
    return run_dir / "item.json"
