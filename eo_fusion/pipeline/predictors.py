"""The real tile predictor: build the tile's ModalityStack, then run the model on it.

:class:`ModelPredictor` is what ``run_job`` uses unless told otherwise. It is a small frozen value
(checkpoint folder, task, batch size, the legend read from the model card) that pickles cheaply to
dask workers; each worker process loads the weights once (a per-process cache keyed by the folder
and the weights' sha256) and reuses them for every tile it runs.

Hardware: the job's ``model.device``/``precision``/``compile`` travel with the predictor and each
worker resolves them itself (``auto`` = CUDA when that worker sees a GPU). The submitting process
resolves them too, when the run starts: a device it lacks fails the run at once (exit 2), and what
it picked is recorded in the provenance (manifest, report, STAC); a worker that picks otherwise
says so in its log.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from eo_fusion.config import ModelRef
from eo_fusion.errors import CheckpointError
from eo_fusion.files import sha256_file
from eo_fusion.pipeline.input_checks import InputReport, tile_input_report
from eo_fusion.pipeline.legend import ClassInfo
from eo_fusion.pipeline.plan import TileTask

log = logging.getLogger(__name__)
_load_lock = threading.Lock()
_announced: set[tuple[str, str]] = set()


@lru_cache(maxsize=4)
def _cached_model(folder: str, weights_sha256: str) -> Any:
    # The sha in the key makes a replaced checkpoint load afresh in long-lived workers.
    from eo_fusion.models import load_model

    return load_model(Path(folder))


@lru_cache(maxsize=4)
def _shared_windows(folder: str, weights_sha256: str, task: str) -> Any:
    # One per model head and process: the worker threads of a process share their tiles' edges.
    from eo_fusion.models.shared_windows import SharedWindows

    return SharedWindows()


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
        overlap: pixels a window shares with each neighbour.
        device: the job's ``model.device`` (``auto | cpu | cuda | mps``).
        precision: the job's ``model.precision`` (``auto | fp32 | bf16 | fp16``).
        compile: ``torch.compile`` the model in each worker.
        resolved: what device, device name and precision the submitting process picked.
    """

    folder: str
    task: str
    batch_size: int
    classes: tuple[ClassInfo, ...]
    card_sha256: str
    weights_sha256: str
    model_name: str
    window: int
    overlap: int = 8
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    resolved: tuple[tuple[str, str], ...] = ()

    def options(self) -> Any:
        """The :class:`~eo_fusion.models.predict.InferenceOptions` of the job's model section."""
        from eo_fusion.models.predict import InferenceOptions

        return InferenceOptions(
            device=self.device,  # type: ignore[arg-type]  # validated by ModelRef
            precision=self.precision,  # type: ignore[arg-type]
            compile=self.compile,
            option="model.",
        )

    @classmethod
    def from_ref(cls, ref: ModelRef) -> ModelPredictor:
        """Read the model card named by a job's ``model`` section (default: the bundled model).

        Raises:
            CheckpointError: no card, or the card has no head for ``ref.task``.
        """
        from eo_fusion.models.checkpoint import BUNDLED_DIR, CARD, read_card
        from eo_fusion.models.predict import InferenceOptions, window_settings

        folder = Path(ref.checkpoint) if ref.checkpoint else BUNDLED_DIR
        card = read_card(folder)
        classes = tuple(
            ClassInfo(value=c.id, name=c.name, color=c.color) for c in card.task(ref.task).classes
        )
        bad = [c.value for c in classes if not 0 <= c.value <= 254]
        if bad:
            raise CheckpointError(
                f"model card {folder / CARD}: class ids {bad} do not fit a uint8 map "
                "(0–254; 255 is nodata)",
                fix="renumber the classes in the model card",
            )
        window, overlap = window_settings(card, ref.window, ref.overlap, option="model.")
        opts = InferenceOptions(ref.device, ref.precision, ref.compile, option="model.")
        resolved = opts.describe()  # a device this process lacks fails here, naming the option
        log.info(
            "model %s: device %s (%s, model.device: %s), precision %s (model.precision: %s), "
            "compile %s, windows of %d px overlapping by %d px",
            card.name, resolved["device"], resolved["device_name"], ref.device,
            resolved["precision"], ref.precision, resolved["compile"], window, overlap,
        )  # fmt: skip
        return cls(
            folder=str(folder),
            task=ref.task,
            batch_size=ref.batch_size,
            classes=classes,
            card_sha256=sha256_file(folder / CARD),
            weights_sha256=card.weights.sha256 if card.weights else "",
            model_name=card.name,
            window=window,
            overlap=overlap,
            device=ref.device,
            precision=ref.precision,
            compile=ref.compile,
            resolved=tuple(sorted(resolved.items())),
        )

    def predict(self, task: TileTask) -> np.ndarray:
        """Build the padded tile's stack and return ``(class, y, x)`` probabilities on it."""
        return self.predict_with_report(task)[0]

    def predict_with_report(self, task: TileTask) -> tuple[np.ndarray, InputReport]:
        """:meth:`predict`, plus what the tile's stack held (skipped items, cloudy dates, partial
        inputs, void values; see :mod:`eo_fusion.pipeline.input_checks`)."""
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
        opts = self.options()
        self._announce(opts)
        probs = predict(
            stack, model, task=self.task, batch_size=self.batch_size, device=opts.device,
            precision=opts.precision, compile=opts.compile, window=self.window,
            overlap=self.overlap, core=task.tile.core_in_padded,
            shared=_shared_windows(self.folder, self.weights_sha256, self.task),
            grid=task.tile.grid_in_padded,
        )  # fmt: skip
        out = np.asarray(probs.transpose("class", "y", "x").values, dtype=np.float32)
        report = tile_input_report(task, stack)
        return out, replace(report, coreg=json.loads(stack.attrs.get("coreg") or "{}"))

    def _announce(self, opts: Any) -> None:
        """Log, once per worker process, the device and precision this worker picked."""
        here = opts.describe()
        key = (here["device"], here["precision"])
        if key in _announced:
            return
        _announced.add(key)
        planned = dict(self.resolved)
        same = all(planned.get(k) == here[k] for k in ("device", "precision"))
        log.log(
            logging.INFO if same else logging.WARNING,
            "worker runs model %s on %s (%s), precision %s%s",
            self.model_name, here["device"], here["device_name"], here["precision"],
            "" if same or not planned else
            f" (the run recorded {planned.get('device')}, {planned.get('precision')})",
        )  # fmt: skip

    def verify(self) -> None:
        """Load the model once in this process and check its weights against the card.

        Called by ``run_job`` before any worker starts, so a forged or mismatched checkpoint
        fails once, with the checkpoint's name, instead of in every tile.

        Raises:
            CheckpointError: the card changed since it was read, the weights' sha256 is not
                the card's, or they do not load.
        """
        from eo_fusion.models.checkpoint import CARD, read_card

        folder = Path(self.folder)
        if sha256_file(folder / CARD) != self.card_sha256:
            raise CheckpointError(
                f"model card {folder / CARD} changed while the run was starting",
                fix="rerun once the checkpoint is no longer being written",
            )
        card = read_card(folder)
        weights = folder / (card.weights.file if card.weights else "model.safetensors")
        # Hashed here even when a copy is cached: the file on disk is what the run cites.
        actual = sha256_file(weights) if weights.is_file() else "missing"
        if actual != self.weights_sha256:
            raise CheckpointError(
                f"weights {weights} do not match the sha256 in {folder / CARD} "
                f"({actual[:12]}… ≠ {self.weights_sha256[:12]}…)",
                fix="the file is corrupt or was replaced; restore it or regenerate the checkpoint",
            )
        _model(self.folder, self.weights_sha256)

    def provenance(self) -> dict[str, Any]:
        """Model identity for STAC and the report."""
        resolved = dict(self.resolved)
        return {
            "model": self.model_name,
            "model_task": self.task,
            "model_card_sha256": self.card_sha256,
            "model_weights_sha256": self.weights_sha256,
            "model_window": self.window,
            "model_overlap": self.overlap,
            "model_device": resolved.get("device", self.device),
            "model_device_name": resolved.get("device_name", ""),
            "model_precision": resolved.get("precision", self.precision),
            "model_compile": self.compile,
            "model_device_option": self.device,
            "model_precision_option": self.precision,
        }
