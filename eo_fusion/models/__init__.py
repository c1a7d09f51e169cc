"""The spectrum-aware model: spectral embedding, ViT encoder, MAE pretraining, heads, checkpoints.

Public API: :func:`load_model` and :func:`predict` (see docs/model.md).
"""

from __future__ import annotations

from eo_fusion.models.checkpoint import LoadedModel
from eo_fusion.models.predict import load_model, predict

__all__ = ["LoadedModel", "load_model", "predict"]
