"""The ``eo-fusion evaluate`` config file (:class:`EvaluateSpec`) and its profiles.

A profile (``--profile NAME``, ``--quick``) is a mapping of top-level keys merged (recursively)
into the file before validation, so ``profiles: {medium: {seeds: [0, 1]}}`` changes only the
seeds. ``quick`` has a built-in default (:data:`QUICK`) for tests; a ``quick`` entry in the file
replaces it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from eo_fusion.config import ConfigPath, StrictModel, load_yaml, parse_spec
from eo_fusion.errors import ConfigError
from eo_fusion.models.config import DataSpec, FinetuneSpec, PretrainSpec

RowName = Literal[
    "ours-pretrained",
    "ours-pretrained-masked",
    "ours-random",
    "galileo",
    "galileo-masked",
    "presto",
    "forest",
    "probe-ours-pretrained",
    "probe-ours-random",
    "probe-galileo",
    "probe-presto",
    "probe-bands",
]
ALL_ROWS: tuple[RowName, ...] = get_args(RowName)

#: The built-in ``--quick`` profile: 2 folds × 1 seed and a few optimiser steps (tests).
QUICK: dict[str, Any] = {
    "folds": 2,
    "seeds": [0],
    "ours": {
        "pretrain": {"steps": 2, "batch_size": 2, "warmup_steps": 1},
        "finetune": {"steps": 2, "batch_size": 2},
    },
    "heads": {"steps": 2, "batch_size": 2},
    "probe": {"max_pixels": 200, "max_iter": 20},
    "forest": {"n_estimators": 4},
}


class OursSpec(StrictModel):
    """Our spectral ViT: pretraining and fine-tuning settings, passed to
    :class:`~eo_fusion.models.config.PretrainSpec` / ``FinetuneSpec`` (the evaluation sets their
    ``name``, ``data``, ``out``, ``seed``, ``threads``, inputs and hold-out itself)."""

    pretrain: dict[str, Any] = Field(
        default_factory=dict, description="PretrainSpec fields (steps, batch_size, lr, ...)"
    )
    finetune: dict[str, Any] = Field(
        default_factory=dict, description="FinetuneSpec fields (steps, mode, channels, ...)"
    )


class HeadSpec(StrictModel):
    """Heads on frozen published encoders (Galileo: dense decoder; Presto: MLP)."""

    steps: int = Field(300, ge=1, description="optimiser steps")
    batch_size: int = Field(8, ge=1, description="windows (Galileo) per step")
    pixels_per_step: int = Field(1024, ge=1, description="pixels (Presto) per step")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    channels: int = Field(32, ge=8, description="Galileo decoder channels")
    hidden: int = Field(64, ge=0, description="Presto MLP hidden width (0: linear)")
    window: int = Field(32, ge=8, description="Galileo window edge (px, multiple of 4)")


class ProbeSpec(StrictModel):
    """Linear probes: multinomial logistic regression on standardised per-pixel features."""

    max_pixels: int = Field(4000, ge=10, description="training pixels drawn per split")
    c: float = Field(1.0, gt=0, description="inverse L2 strength (scikit-learn's C)")
    max_iter: int = Field(300, ge=1, description="L-BFGS iterations")


class ForestSpec(StrictModel):
    """Per-pixel random forest on the raw input bands."""

    n_estimators: int = Field(100, ge=1, description="trees")
    min_samples_leaf: int = Field(1, ge=1)


class EvaluateSpec(StrictModel):
    """Repeated spatial block cross-validation of the models in ``rows``."""

    name: str = Field(description="evaluation name (report title)")
    data: DataSpec = Field(
        description="scenes; those with `labels` are cross-validated, the others only add "
        "(unlabelled, other places) pretraining data"
    )
    out: ConfigPath = Field(Path("out/evaluate"), description="output folder")
    series: str = Field(
        "s2-l1c", description="time-series modality of the labelled scenes (mode: timeseries)"
    )
    inputs: dict[str, list[str]] = Field(
        description="modality -> band keys of the composite rows (ours, forest); the series "
        "modality is median-composited over its dates"
    )
    masked_modality: str | None = Field(
        "dem", description="modality removed at inference for the `*-masked` rows"
    )
    rows: list[RowName] = Field(default_factory=lambda: list(ALL_ROWS), description="rows")
    folds: int = Field(5, ge=2, description="folds per seed (k)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    block: int = Field(25, ge=2, description="block edge (px)")
    buffer: int = Field(4, ge=0, description="px around test blocks used neither to train nor test")
    interval: Literal["corrected", "naive"] = Field(
        "corrected", description="95 % t-interval: Nadeau-Bengio corrected or naive"
    )
    ignore_index: int = Field(0, description="label value that is not scored")
    class_names: dict[int, str] = Field(default_factory=dict, description="class id -> name")
    ours: OursSpec = Field(default_factory=OursSpec)  # type: ignore[arg-type]
    heads: HeadSpec = Field(default_factory=HeadSpec)  # type: ignore[arg-type]
    probe: ProbeSpec = Field(default_factory=ProbeSpec)  # type: ignore[arg-type]
    forest: ForestSpec = Field(default_factory=ForestSpec)  # type: ignore[arg-type]
    threads: int = Field(1, ge=1, description="torch CPU threads")
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named overrides (`--profile NAME`; `quick` built in)"
    )
    profile: str | None = Field(None, description="set by --profile (recorded in the results)")

    @model_validator(mode="after")
    def _consistent(self) -> EvaluateSpec:
        if self.series not in self.inputs:
            raise ValueError(f"`inputs` must include the series modality '{self.series}'")
        if self.masked_modality is not None and self.masked_modality not in self.inputs:
            raise ValueError(f"`masked_modality` '{self.masked_modality}' is not in `inputs`")
        if self.heads.window % 4:
            raise ValueError("`heads.window` must be a multiple of 4 (Galileo patch size)")
        if not any(s.labels for s in self.data.scenes):
            raise ValueError("no scene in `data.scenes` has `labels`")
        return self

    def pretrain_spec(self, out: Path, seed: int) -> PretrainSpec:
        """The pretraining spec of one split (``ours.pretrain`` + the evaluation's fields)."""
        fields = {"checkpoint_every": 10**9, **self.ours.pretrain}
        fields |= {"name": f"{self.name}-pretrain", "data": self.data, "out": out, "seed": seed}
        return PretrainSpec.model_validate({**fields, "threads": self.threads})

    def finetune_spec(self, out: Path, seed: int, whole: int) -> FinetuneSpec:
        """The fine-tuning spec of one split; ``whole`` (px) is one hold-out block covering the
        scene, so :func:`~eo_fusion.train.finetune.finetune` holds nothing out itself."""
        pre = self.ours.pretrain
        fields = {k: pre[k] for k in ("size", "patch_size") if k in pre} | self.ours.finetune
        fields |= {
            "name": f"{self.name}-finetune",
            "task": "landcover",
            "data": self.data,
            "out": out,
            "inputs": self.inputs,
            "optional_inputs": [self.masked_modality] if self.masked_modality else [],
            "holdout_block": max(whole, 4),
            "ignore_index": self.ignore_index,
            "class_names": self.class_names,
            "seed": seed,
            "threads": self.threads,
        }
        return FinetuneSpec.model_validate(fields)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_evaluate_spec(path: Path, profile: str | None = None) -> EvaluateSpec:
    """Load an evaluation YAML file, with the overrides of ``profile`` merged in.

    Raises:
        ConfigError: unknown keys, a profile the file does not define, or ``ours`` settings
            that PretrainSpec / FinetuneSpec reject.
    """
    path = Path(path).resolve()
    raw = load_yaml(path)
    if profile is not None:
        profiles = raw.get("profiles") or {}
        if profile not in profiles and profile != "quick":
            raise ConfigError(
                f"{path}: no profile '{profile}' (defined: {', '.join(profiles) or 'none'})",
                fix="add it under `profiles:` or use --quick",
            )
        raw = _merge(raw, profiles.get(profile, QUICK)) | {"profile": profile}
    spec = parse_spec(EvaluateSpec, raw, base_dir=path.parent, source=str(path))
    try:  # fail now, not after an hour of training
        spec.pretrain_spec(spec.out, 0)
        spec.finetune_spec(spec.out, 0, 4)
    except ValueError as e:
        raise ConfigError(
            f"{path}: `ours` settings are not valid pretraining / fine-tuning options: {e}",
            fix="see docs/configuration.md (PretrainSpec, FinetuneSpec)",
        ) from e
    return spec
