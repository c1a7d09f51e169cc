"""The training job (``eo-fusion train JOB.yaml``): labels over a catalog -> chips -> model.

A training job reads like a map job: a catalog, an AOI (or the labels' extent), a time window,
a grid and the modalities with their typed options (the same :class:`~eo_fusion.config.ModalitySpec`
as the map job), plus the reference labels, how chips are sampled, how they are split into
spatial groups, and how the model is trained. Relative paths resolve against the job file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from eo_fusion.config import (
    AOISpec,
    ConfigPath,
    ModalitySpec,
    StrictModel,
    TimeSpec,
    load_spec,
)

VECTOR_SUFFIXES = (".gpkg", ".parquet", ".geoparquet", ".geojson", ".json", ".shp", ".fgb")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")


class LabelsSpec(StrictModel):
    """Reference labels: a vector file (one class per polygon) or a class raster.

    Vector files are read with geopandas (GeoPackage, GeoParquet, GeoJSON, Shapefile, FlatGeobuf;
    any CRS). A raster is polygonised into connected regions of one value, which then count as
    fields for sampling and splitting. An optional mapping table turns source codes (e.g.
    national crop codes or EuroCrops HCAT codes) into the model's classes.
    """

    path: ConfigPath = Field(
        description="label file: vector (.gpkg, .parquet, .geojson, .shp, .fgb) or raster (.tif)"
    )
    layer: str | None = Field(None, description="layer of a multi-layer vector file")
    class_column: str | None = Field(
        None, description="column with the class of each polygon (vector labels; required there)"
    )
    name_column: str | None = Field(
        None, description="column with class names (used when `classes` does not name them)"
    )
    id_column: str | None = Field(
        None, description="column identifying each field (default: the row number)"
    )
    mapping: ConfigPath | None = Field(
        None, description="table source code -> model class: CSV (columns `from`, `to`) or YAML"
    )
    mapping_from: str = Field("from", description="CSV column holding the source codes")
    mapping_to: str = Field("to", description="CSV column holding the model classes")
    unmapped: Literal["drop", "error"] = Field(
        "drop",
        description="source codes absent from the mapping: drop those fields (logged "
        "and counted in the report) or stop with an error",
    )
    ignore: list[int | str] = Field(
        default_factory=lambda: list[int | str]([0]),
        description="class values that mean 'no label'",
    )
    classes: dict[int, str] = Field(
        default_factory=dict,
        description="model class id -> name; classes not listed are taken from the data "
        "(their ids, or 1..K for text classes)",
    )

    @model_validator(mode="after")
    def _vector_needs_column(self) -> LabelsSpec:
        suffix = Path(self.path).suffix.lower()
        if suffix not in VECTOR_SUFFIXES + RASTER_SUFFIXES:
            raise ValueError(
                f"labels file {self.path} has an unknown suffix {suffix!r}; use one of "
                f"{', '.join(VECTOR_SUFFIXES + RASTER_SUFFIXES)}"
            )
        if suffix in VECTOR_SUFFIXES and not self.class_column:
            raise ValueError(f"vector labels {Path(self.path).name} need `class_column`")
        return self

    @property
    def is_raster(self) -> bool:
        """True for raster labels (by file suffix)."""
        return Path(self.path).suffix.lower() in RASTER_SUFFIXES


class SceneLabelsSpec(StrictModel):
    """Scene labels (multi-label): each item of ``modality`` found over the AOI and window is one
    chip (centred on the item), labelled with the class names listed in its STAC property
    ``property`` (BigEarthNet's CORINE labels: ``bigearthnet:labels``)."""

    modality: str = Field(description="modality whose items carry the labels (e.g. s2-l2a)")
    property: str = Field("bigearthnet:labels", description="STAC property with the label list")
    classes: list[str] | None = Field(
        None, description="class names in model order; default: every name found, sorted"
    )


class ChipGridSpec(StrictModel):
    """The grid chips are cut from (anchored on multiples of the resolution, like the map job)."""

    resolution: float = Field(10.0, gt=0, description="pixel size in CRS units (metres for UTM)")
    crs: str = Field("auto", description="'auto' = UTM zone of the AOI centroid, or any CRS")
    halo: int = Field(
        8,
        ge=0,
        description="context pixels read around each chip and cropped away (as the map "
        "job's tile halo: chip pixels equal the map job's pixels)",
    )


class SamplingSpec(StrictModel):
    """How chips are drawn over the labelled fields (balanced per class, capped per field)."""

    chip_size: int = Field(32, ge=8, description="chip edge in pixels")
    chips_per_class: int = Field(
        50, ge=1, description="chips drawn per class and split (fewer when the fields run out)"
    )
    max_per_polygon: int = Field(4, ge=1, description="at most this many chips per field")
    min_labelled: float = Field(
        0.1, gt=0, le=1, description="minimum share of labelled pixels in a chip"
    )
    seed: int = Field(0, description="random seed of the sampling")


class SplitSpec(StrictModel):
    """Spatial split: square blocks go wholly to one split; chips stay inside one block.

    Each chip lies inside a single block, at least ``buffer / 2`` from its edges, so chips of
    different blocks are at least ``buffer`` apart. Each field belongs to the split of the block
    holding most of its pixels; its pixels are unlabelled in chips of any other split, so no field
    has labels on both sides.
    """

    block_size: float = Field(640.0, gt=0, description="block edge in CRS units (metres)")
    buffer: float = Field(
        20.0, ge=0, description="minimum gap between chips of different blocks (CRS units)"
    )
    val_fraction: float = Field(0.25, gt=0, lt=1, description="share of blocks for validation")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="share of blocks for a test split")
    seed: int = Field(0, description="random seed of the block assignment")

    @model_validator(mode="after")
    def _fractions(self) -> SplitSpec:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave blocks for training")
        return self


class TrainingSpec(StrictModel):
    """The model and its optimisation (the encoder/decoder are the fine-tuning code's)."""

    task: Literal["segmentation", "parcel", "multilabel"] = Field(
        "segmentation",
        description="per-pixel classes, one class per field (pixels pooled inside it), or "
        "multi-label scene classes (needs `scene_labels`)",
    )
    pretrained: str | None = Field(
        "bundled", description="'bundled' model, a checkpoint folder, or null = random init"
    )
    inputs: dict[str, list[str]] | None = Field(
        None, description="modality -> band keys; default: every band of every modality"
    )
    mode: Literal["frozen", "partial", "full"] = Field(
        "full", description="which encoder parts train"
    )
    trainable_blocks: int = Field(2, ge=0, description="blocks trained in `partial` mode")
    size: str = Field("nano", description="encoder size without a pretrained model")
    patch_size: int = Field(4, ge=1, description="patch edge (px) without a pretrained model")
    channels: int = Field(32, ge=8, description="decoder channels")
    steps: int = Field(300, ge=1, description="optimiser steps")
    batch_size: int = Field(8, ge=1, description="global batch (split over processes in DDP)")
    lr: float = Field(5e-4, gt=0, description="peak learning rate (AdamW, warm-up + cosine)")
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(10, ge=0)
    class_weights: Literal["none", "inverse_sqrt"] = Field("inverse_sqrt")
    modality_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="probability that each input modality is dropped (set to no data, so "
        "masked) from a training sample; at least one always stays; 0 = off",
    )
    fusion: Literal["early", "late_mean", "late_concat"] = Field(
        "early",
        description="composites: early = one token per patch from all bands; late_mean / "
        "late_concat = one encoder pass per sensor, features averaged / concatenated "
        "(time series: early only)",
    )
    checkpoint_every: int = Field(50, ge=1, description="steps between resumable checkpoints")
    seed: int = Field(0, description="random seed (batches, augmentation, initialisation)")
    threads: int = Field(2, ge=1, description="torch CPU threads per process")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="where to train: auto = CUDA when present, else MPS, else CPU"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast: auto = bf16 (or fp16) on GPUs, fp32 on the CPU"
    )
    compile: bool = Field(False, description="torch.compile the model (PyTorch 2)")


class TrainJobSpec(StrictModel):
    """A training job: labels + catalog -> chip store -> fine-tuned model + metrics."""

    name: str = Field(
        description="job name (output folder, model card)", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )
    description: str = Field("", description="what the model maps (report, model card)")
    catalog: str = Field("sample", description="catalog name (catalogs/*.yaml) or path to one")
    aoi: AOISpec | None = Field(None, description="area; default: the labels' extent")
    time: TimeSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    grid: ChipGridSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    modalities: dict[str, ModalitySpec] = Field(description="modality name -> options (map job's)")
    optional_inputs: list[str] = Field(
        default_factory=list, description="modalities that may be absent when mapping"
    )
    labels: LabelsSpec | None = Field(None, description="field polygons or a class raster")
    scene_labels: SceneLabelsSpec | None = Field(
        None, description="multi-label scene classes from item properties (instead of `labels`)"
    )
    sampling: SamplingSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    split: SplitSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    training: TrainingSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    out: ConfigPath = Field(Path("out/train"), description="output folder (run folders inside)")
    workers: int = Field(2, ge=1, description="dask threads building chips")
    wave_size: int = Field(16, ge=1, description="chips submitted to dask at once")

    @model_validator(mode="after")
    def _chip_fits_block(self) -> TrainJobSpec:
        if (self.labels is None) == (self.scene_labels is None):
            raise ValueError("give exactly one of `labels` (fields) or `scene_labels` (scenes)")
        if (self.scene_labels is not None) != (self.training.task == "multilabel"):
            raise ValueError("training.task multilabel goes with `scene_labels`, and only with it")
        if self.scene_labels is not None:
            if self.aoi is None:
                raise ValueError("scene labels need an `aoi` (there is no labels' extent)")
            return self
        res = self.grid.resolution
        need = self.sampling.chip_size * res + self.split.buffer
        if need > self.split.block_size:
            raise ValueError(
                f"split.block_size {self.split.block_size} is smaller than a chip plus the buffer "
                f"({self.sampling.chip_size} px × {res} + {self.split.buffer} = {need}); "
                "raise block_size or lower chip_size/buffer"
            )
        return self


def load_train_job(path: Path) -> TrainJobSpec:
    """Load and validate a training job YAML file (unknown keys refused, paths resolved)."""
    return load_spec(TrainJobSpec, path)
