"""The spectrum-aware model: spectral embedding, ViT encoder, MAE pretraining, heads, checkpoints.

Public API: :func:`load_model`, :func:`predict`, :func:`import_smarties` and :func:`embed`
(see docs/model.md).
"""

from __future__ import annotations

from eo_fusion.models.card import ModelCard
from eo_fusion.models.checkpoint import LoadedModel
from eo_fusion.models.embed import embed
from eo_fusion.models.predict import load_model, predict
from eo_fusion.models.smarties import import_smarties

__all__ = ["LoadedModel", "ModelCard", "embed", "import_smarties", "load_model", "predict"]
