"""Configuration specs for pretraining and fine-tuning (``eo-fusion pretrain|finetune CONFIG``).

The training data are ModalityStacks: either built from a catalog (``scenes``: an area, a grid and
modalities per scene, exactly as in a job file) or read from stacks saved as Zarr (``zarr``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from eo_fusion.config import ConfigPath, ModalityMap, StrictModel, TimeSpec, load_spec


class SceneSpec(StrictModel):
    """One training scene: a stack built from the catalog on its own grid."""

    name: str = Field(description="scene name (used in logs and the model card)")
    bbox: tuple[float, float, float, float] = Field(
        description="minx, miny, maxx, maxy in the units of `crs` (the scene's grid extent)"
    )
    crs: str = Field(description="CRS of the grid (EPSG code)")
    resolution: float | None = Field(None, gt=0, description="pixel size in CRS units")
    shape: tuple[int, int] | None = Field(
        None, description="rows, cols (instead of `resolution`: keeps a native grid exactly)"
    )
    time: TimeSpec = Field(default_factory=TimeSpec)  # type: ignore[arg-type]
    modalities: ModalityMap = Field(description="modality name -> options")
    labels: str | None = Field(None, description="modality holding the reference labels")

    @model_validator(mode="after")
    def _resolution_or_shape(self) -> SceneSpec:
        if (self.resolution is None) == (self.shape is None):
            raise ValueError("give exactly one of `resolution` or `shape`")
        return self


class PastisSpec(StrictModel):
    """PASTIS / PASTIS-R on disk (see eo_fusion/train/adapters.py)."""

    root: ConfigPath = Field(
        description="folder holding PASTIS-R/ (metadata.geojson, DATA_S2, ...)"
    )
    folds: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="folds to read")
    s1: bool = Field(False, description="also read the Sentinel-1 ascending series (PASTIS-R)")
    max_patches: int | None = Field(None, ge=1, description="read at most this many patches")


class FlairHubSpec(StrictModel):
    """FLAIR-HUB folders on disk (see eo_fusion/train/adapters.py)."""

    root: ConfigPath = Field(description="folder holding <DOMAIN>_<MODALITY> folders")
    domain: str | None = Field(None, description="read one domain only (e.g. D004-2021)")
    labels: Literal["labels-landcover", "labels-crop"] = Field(
        "labels-landcover", description="COSIA land cover (19 classes) or LPIS crops (23 codes)"
    )
    max_patches: int | None = Field(None, ge=1, description="read at most this many patches")


class DataSpec(StrictModel):
    """Where the training stacks come from."""

    catalog: str = Field("sample", description="catalog name or path (for `scenes`)")
    scenes: list[SceneSpec] = Field(
        default_factory=list, description="stacks built from the catalog"
    )
    zarr: list[ConfigPath] = Field(default_factory=list, description="saved stacks (Zarr folders)")
    zarr_labels: str | None = Field(None, description="label variable of the Zarr stacks")
    pastis: PastisSpec | None = Field(None, description="PASTIS / PASTIS-R patches")
    flair_hub: FlairHubSpec | None = Field(None, description="FLAIR-HUB patches")
    pairs: list[tuple[str, str]] = Field(
        default_factory=list,
        description="modality pairs used for cross-sensor mixup when both are in one scene; "
        "default: every pair of different modalities of a scene",
    )

    @model_validator(mode="after")
    def _some_data(self) -> DataSpec:
        if not (self.scenes or self.zarr or self.pastis or self.flair_hub):
            raise ValueError("give at least one of `scenes`, `zarr`, `pastis`, `flair_hub`")
        return self


class PretrainSpec(StrictModel):
    """MAE pretraining of the spectral ViT."""

    name: str = Field(description="model name (card and output folder)")
    data: DataSpec
    out: ConfigPath = Field(Path("out/pretrain"), description="output folder (checkpoints, curves)")
    size: str = Field("nano", description="encoder size: nano, tiny, small, base, large")
    patch_size: int = Field(4, ge=1, description="patch edge in pixels")
    image_size: int = Field(32, ge=4, description="training window edge in pixels")
    steps: int = Field(300, ge=1, description="optimiser steps")
    batch_size: int = Field(8, ge=1, description="windows per step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW, cosine decay)")
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(20, ge=0)
    mask_ratio: float = Field(0.75, gt=0, lt=1, description="share of patches masked")
    mixup_prob: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of steps of a paired view that use cross-sensor token mixup "
        "(SMARTIES: 1, every paired sample)",
    )
    mixup: Literal["pairs", "swap"] = Field(
        "pairs",
        description="pairs: two complementary mixed sequences sharing one mask, each position "
        "scored against the image its token came from (SMARTIES); swap: one mixed sequence "
        "scored against both images' bands",
    )
    mix_ratio: float = Field(0.5, ge=0, le=1, description="share of positions swapped in mixup")
    target_norm: Literal["patch", "patch_band", "band"] = Field(
        "patch",
        description="reconstruction targets: patch = each patch normalised over all its bands "
        "(SMARTIES); patch_band = each band of a patch on its own; band = the band-normalised "
        "pixels (better for small patches, see docs/model.md)",
    )
    normalization: Literal["percentile", "standard"] = Field(
        "percentile",
        description="input normalisation: percentile = clip to the 1st/99th percentile, scale "
        "to 0-1, then standardise (SMARTIES); standard = mean/std",
    )
    band_dropout: float = Field(
        0.3, ge=0, le=1, description="probability of keeping only a random subset of bands"
    )
    seed: int = Field(0, description="random seed")
    checkpoint_every: int = Field(100, ge=1, description="steps between resumable checkpoints")
    threads: int = Field(2, ge=1, description="torch CPU threads")


class FinetuneSpec(StrictModel):
    """Fine-tuning a task head on labelled stacks."""

    name: str = Field(description="model name (card and output folder)")
    task: Literal["landcover", "crops"] = Field("landcover")
    data: DataSpec
    pretrained: ConfigPath | None = Field(
        None, description="checkpoint folder of a pretrained encoder; none = random init"
    )
    out: ConfigPath = Field(Path("out/finetune"), description="output folder")
    inputs: dict[str, list[str]] = Field(
        description="modality -> band keys the head consumes (must be in the stacks)"
    )
    optional_inputs: list[str] = Field(
        default_factory=list, description="modalities that may be absent at inference"
    )
    mode: Literal["frozen", "partial", "full"] = Field(
        "full", description="frozen encoder, last `trainable_blocks` blocks, or everything"
    )
    trainable_blocks: int = Field(2, ge=0, description="blocks trained in `partial` mode")
    size: str = Field("nano", description="encoder size when not pretrained")
    patch_size: int = Field(4, ge=1)
    image_size: int = Field(32, ge=4, description="training window edge in pixels")
    channels: int = Field(32, ge=8, description="decoder channels")
    steps: int = Field(300, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    class_weights: Literal["none", "inverse_sqrt"] = Field("inverse_sqrt")
    ignore_index: int = Field(0, description="label value that is not scored (no data)")
    class_names: dict[int, str] = Field(
        default_factory=dict, description="class id -> name (default: 'class <id>')"
    )
    class_colors: dict[int, str] = Field(
        default_factory=dict, description="class id -> '#rrggbb' (default: a fixed palette)"
    )
    modality_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="probability that each input modality is dropped (its bands set to no data, "
        "so masked) from a training window; at least one modality always stays; 0 = off. "
        "Trains the head to run on any subset of its modalities (docs/model.md)",
    )
    fusion: Literal["early", "late_mean", "late_concat"] = Field(
        "early",
        description="land cover: early = one token per patch from all bands (mean of the band "
        "projections); late_mean / late_concat = one encoder pass per sensor (key prefix s2, "
        "s1, elevation, ...), features averaged over the sensors with data / concatenated, "
        "then the head. Crops: early only (its tokens are per modality and date already)",
    )
    holdout_block: int = Field(25, ge=4, description="edge of the spatial hold-out blocks (px)")
    holdout_fraction: float = Field(0.25, gt=0, lt=1, description="share of blocks held out")
    seed: int = Field(0)
    threads: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _fusion_task(self) -> FinetuneSpec:
        if self.task == "crops" and self.fusion != "early":
            raise ValueError(
                "`fusion` must be early for the crops task (its temporal attention already "
                "runs over per-modality, per-date tokens)"
            )
        return self


def load_pretrain_spec(path: Path) -> PretrainSpec:
    """Load a pretraining YAML file."""
    return load_spec(PretrainSpec, path)


def load_finetune_spec(path: Path) -> FinetuneSpec:
    """Load a fine-tuning YAML file."""
    return load_spec(FinetuneSpec, path)
