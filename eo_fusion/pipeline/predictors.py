"""The real tile predictor: build the tile's ModalityStack, then run the model on it.

:class:`ModelPredictor` is what ``run_job`` uses unless told otherwise. It is a small frozen value
(checkpoint folder, task, batch size, the legend read from the model card) that pickles cheaply to
dask workers; each worker process loads the weights once (a per-process cache keyed by the folder
and the weights' sha256) and reuses them for every tile it runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from eo_fusion.config import ModelRef
from eo_fusion.errors import CheckpointError
from eo_fusion.files import sha256_file
from eo_fusion.pipeline.legend import ClassInfo
from eo_fusion.pipeline.plan import TileTask

_load_lock = threading.Lock()


@lru_cache(maxsize=4)
def _cached_model(folder: str, weights_sha256: str) -> Any:
    # The sha in the key makes a replaced checkpoint load afresh in long-lived workers.
    from eo_fusion.models import load_model

    return load_model(Path(folder))


def _model(folder: str, weights_sha256: str) -> Any:
    with _load_lock:  # threads of one worker share one copy instead of loading it twice
        return _cached_model(folder, weights_sha256)


@dataclass(frozen=True)
class ModelPredictor:
    """Stack + predict for one tile with an eo-fusion checkpoint.

    Attributes:
        folder: checkpoint folder (``model.safetensors`` + ``model_card.json``).
        task: head to run (``landcover`` or ``crops``).
        batch_size: inference windows per forward pass.
        classes: legend of the task, from the model card.
        card_sha256: sha256 of ``model_card.json`` (provenance).
        weights_sha256: sha256 of the weights, as recorded in the card.
        model_name: the card's model name.
        window: the model's inference window in pixels (halo ≥ window − 1 gives seamless maps).
    """

    folder: str
    task: str
    batch_size: int
    classes: tuple[ClassInfo, ...]
    card_sha256: str
    weights_sha256: str
    model_name: str
    window: int

    @classmethod
    def from_ref(cls, ref: ModelRef) -> ModelPredictor:
        """Read the model card named by a job's ``model`` section (default: the bundled model).

        Raises:
            CheckpointError: no card, or the card has no head for ``ref.task``.
        """
        from eo_fusion.models.checkpoint import BUNDLED_DIR, CARD, read_card

        folder = Path(ref.checkpoint) if ref.checkpoint else BUNDLED_DIR
        card = read_card(folder)
        tasks = card.get("tasks", {})
        if ref.task not in tasks:
            raise CheckpointError(
                f"model {card.get('name', folder)} has no '{ref.task}' head "
                f"(it has: {', '.join(tasks) or 'none'})",
                fix="set model.task to one the model card lists, or use another checkpoint",
            )
        classes = tuple(
            ClassInfo(value=int(c["id"]), name=str(c["name"]), color=str(c["color"]))
            for c in tasks[ref.task]["classes"]
        )
        bad = [c.value for c in classes if not 0 <= c.value <= 254]
        if bad:
            raise CheckpointError(
                f"model card {folder / CARD}: class ids {bad} do not fit a uint8 map "
                "(0–254; 255 is nodata)",
                fix="renumber the classes in the model card",
            )
        arch = card.get("architecture", {}).get("encoder", {})
        window = int(card.get("inference", {}).get("window", arch.get("image_size", 0)) or 0)
        return cls(
            folder=str(folder),
            task=ref.task,
            batch_size=ref.batch_size,
            classes=classes,
            card_sha256=sha256_file(folder / CARD),
            weights_sha256=str(card.get("weights", {}).get("sha256", "")),
            model_name=str(card.get("name", folder.name)),
            window=window,
        )

    def predict(self, task: TileTask) -> np.ndarray:
        """Build the padded tile's stack and return ``(class, y, x)`` probabilities on it."""
        return self.predict_with_info(task)[0]

    def predict_with_info(self, task: TileTask) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`predict` and what the stack recorded: ``{"coreg": modality -> record}``."""
        import json

        import torch  # returns only once fully imported (safe from several worker threads)

        from eo_fusion.models import predict
        from eo_fusion.stack import build_stack

        # Without a cap every worker thread would use all cores and oversubscribe the machine.
        if torch.get_num_threads() != task.threads:
            torch.set_num_threads(task.threads)
        model = _model(self.folder, self.weights_sha256)
        stack = build_stack(
            task.tile.padded, dict(task.items), dict(task.modalities), gdal=task.gdal
        )
        probs = predict(stack, model, task=self.task, batch_size=self.batch_size)
        info = {"coreg": json.loads(stack.attrs.get("coreg") or "{}")}
        return np.asarray(probs.transpose("class", "y", "x").values, dtype=np.float32), info

    def provenance(self) -> dict[str, Any]:
        """Model identity for STAC and the report."""
        return {
            "model": self.model_name,
            "model_task": self.task,
            "model_card_sha256": self.card_sha256,
            "model_weights_sha256": self.weights_sha256,
        }
