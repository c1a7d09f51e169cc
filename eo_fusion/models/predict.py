"""Inference on a ModalityStack: class probabilities on the stack's own grid.

The model runs on fixed windows (``window`` pixels, ``overlap`` pixels shared with each
neighbour; default: the model card's inference settings) whose positions are anchored on the
*global* pixel grid of the stack's CRS (multiples of the stride ``window - overlap`` counted from
the CRS origin), not on the tile's corner. Overlapping windows are blended with separable
weights that ramp linearly over the overlap (a tent when the overlap is half a window). Hence a
pixel's prediction depends only on the data within one window of it: tiles of any size give
identical results for pixels at least ``window - 1`` pixels from the tile edge (use a halo at
least that wide), and small differences only near edges. Tiles of any size work; the edges are
padded and cropped back.

Hardware (:class:`InferenceOptions`): ``device`` ``auto | cpu | cuda | mps`` (``auto``: CUDA
when present), ``precision`` ``auto | fp32 | bf16 | fp16`` as autocast (``auto``: bf16 on GPUs
that support it and on CPUs with native bf16 instructions, fp16 on other GPUs, else fp32; see
:func:`eo_fusion.devices.inference_dtype`), and an optional ``torch.compile``. Softmax and
blending always run in fp32 on the CPU.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import xarray as xr

from eo_fusion.devices import autocast, inference_dtype, precision_name, resolve_device
from eo_fusion.errors import BadInputError, BandError, ModelError
from eo_fusion.models.card import BandNorm, ModelCard, TaskCard, normalize_bands
from eo_fusion.models.checkpoint import LoadedModel, load
from eo_fusion.models.shared_windows import (
    SharedWindows,
    context_digest,
    sharing_tiles,
    window_key,
)

log = logging.getLogger(__name__)


def load_model(path: str | Path | None = None) -> LoadedModel:
    """Load a checkpoint folder (``model.safetensors`` + ``model_card.json``); default: bundled."""
    return load(Path(path) if path is not None else None)


def modality_vars(ds: xr.Dataset, name: str) -> tuple[xr.DataArray, xr.DataArray | None]:
    """A modality and its valid mask with plain dims (``band``, ``time``, ``y``, ``x``).

    Accepts both the plain layout and the stack's prefixed one (``<m>:band``, ``<m>:time``).

    Raises:
        BadInputError: the modality lives on its own sub-grid (``<m>:y``/``<m>:x``).
    """
    from eo_fusion.stack import plain_dims

    da = plain_dims(ds[name], name)
    if f"{name}:y" in ds[name].dims:
        raise BadInputError(
            f"stack modality '{name}' is on its own sub-grid; the model needs every input on the "
            "stack grid",
            fix=f"drop `resolution` from the '{name}' modality of the job",
        )
    valid = plain_dims(ds[f"{name}:valid"], name) if f"{name}:valid" in ds else None
    return da, valid


def normalization(card: ModelCard, modality: str, key: str) -> BandNorm:
    """Normalisation of a band in physical units, from the card (per modality, then per kind)."""
    return card.band_norm(modality, key)


def select_inputs(
    stack: xr.Dataset,
    card: ModelCard,
    task: str,
    bands: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Gather the task's bands from ``stack`` and normalise them.

    Returns ``(array, keys, time)``: ``array`` is ``(C, y, x)`` for composite tasks or
    ``(T, C, y, x)`` for time-series tasks (float32, normalised, NaN = no data or flagged by
    ``<m>:valid``); ``time`` holds the dates of a time series (see :func:`_joined`) or ``None``.
    """
    section = card.task(task)
    temporal = section.mode == "timeseries"
    wanted = list(bands) if bands is not None else None
    arrays, keys, times = [], [], []
    for modality, card_keys in section.inputs.items():
        if modality not in stack.data_vars:
            if modality in section.optional:
                continue
            raise BadInputError(
                f"stack has no '{modality}' variable; task '{task}' needs it "
                f"(stack has: {', '.join(map(str, stack.data_vars))})",
                fix=f"add '{modality}' to the job's modalities",
            )
        var, valid = modality_vars(stack, modality)
        present = [str(k) for k in var["band"].values]
        use = [k for k in present if (k in wanted if wanted is not None else k in card_keys)]
        if not use:
            continue
        if temporal != ("time" in var.dims):
            raise BadInputError(
                f"stack variable '{modality}' has dims {var.dims}; task '{task}' needs "
                + ("a time series (time, band, y, x)" if temporal else "a composite (band, y, x)"),
                fix=f"set mode: {'timeseries' if temporal else 'composite'} for '{modality}'",
            )
        norms = [card.band_norm(modality, k) for k in use]
        arrays.append(_masked_normalised(var.sel(band=use), valid, norms))
        keys += use
        if temporal:
            times.append(var["time"].values)
    if wanted is not None:
        missing = [k for k in wanted if k not in keys]
        if missing:
            raise BandError(
                f"band(s) {missing} are not in the stack variables of task '{task}'",
                fix="pass band keys that the stack holds",
            )
    if not arrays:
        raise BandError(
            f"the stack holds none of the bands the '{task}' model consumes "
            f"({dict(section.inputs)})",
            fix="build the stack with the modalities and bands listed in the model card",
        )
    arr, time = _joined(arrays, times if temporal else None)
    return arr, keys, time


def _masked_normalised(
    var: xr.DataArray, valid: xr.DataArray | None, norms: Sequence[BandNorm]
) -> np.ndarray:
    """One owned float32 copy of ``var``, NaN where ``valid`` is false, normalised in place
    (each temporary would be one more copy of the tile's pixels per tile in flight)."""
    vals = np.array(var.values, dtype="float32")
    if valid is not None:
        np.copyto(vals, np.float32(np.nan), where=~np.expand_dims(valid.values.astype(bool), -3))
    return normalize_bands(vals, norms, axis=-3, in_place=True)


def _joined(
    arrays: Sequence[np.ndarray], times: Sequence[np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Composites concatenated over bands; time series (``times`` given) over the union of
    every modality's own dates (:func:`~eo_fusion.models.heads.union_dates`: a row holds the
    bands of the modality observed that day, NaN in the others' channels), never by index."""
    if times is None:
        return (arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=-3)), None
    from eo_fusion.models.heads import union_dates

    return union_dates(list(zip(arrays, times, strict=True)))


def _global_offset(coord: np.ndarray, *, descending: bool) -> int:
    """Index of the first pixel on the global grid of the CRS (pixel size from the coordinate)."""
    if coord.size < 2:
        return 0
    res = abs(float(coord[1] - coord[0]))
    first = -float(coord[0]) if descending else float(coord[0])
    return int(np.floor(first / res + 1e-6))


def _starts(n: int, offset: int, window: int, stride: int) -> list[int]:
    """Window starts (local pixel index) anchored on multiples of ``stride`` globally."""
    first = (-offset) % stride
    first -= ((first + window - 1) // stride) * stride  # back up to the first window touching 0
    return list(range(first, n, stride))


def _ramp(window: int, overlap: int) -> np.ndarray:
    """Separable blending weights of one window: a linear ramp over ``overlap`` px at each edge.

    Neighbouring windows' ramps overlap exactly, so weights cross-fade over the shared pixels;
    with ``overlap == window // 2`` this is the tent ``min(i + ½, window - i - ½) / (window / 2)``.
    """
    i = np.arange(window, dtype="float32")
    if overlap == 0:  # windows only touch: no blending
        return np.ones((window, window), dtype="float32")
    w = np.minimum(np.minimum(i + 0.5, window - i - 0.5) / overlap, np.float32(1.0))
    return np.outer(w, w)


Precision = Literal["auto", "fp32", "bf16", "fp16"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]


@dataclass(frozen=True)
class InferenceOptions:
    """How windows run: device, autocast precision, ``torch.compile`` (see the module doc).

    ``option`` prefixes the names in errors (``model.`` for a map job's ``model`` section).
    """

    device: DeviceName = "auto"
    precision: Precision = "auto"
    compile: bool = False
    option: str = ""

    def resolve(self) -> tuple[torch.device, torch.dtype | None]:
        """This process's device and autocast dtype (``None`` = fp32); raises BadInputError
        naming the option when the device or precision is not available here."""
        device = resolve_device(self.device, option=f"{self.option}device")
        return device, inference_dtype(device, self.precision, option=f"{self.option}precision")

    def describe(self) -> dict[str, str]:
        """What :meth:`resolve` picks here, in words (for logs, reports and manifests)."""
        device, dtype = self.resolve()
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        return {
            "device": str(device),
            "device_name": name,
            "precision": precision_name(dtype),
            "compile": str(self.compile).lower(),
        }


_COMPILE_LOCK = threading.Lock()
_COMPILED: weakref.WeakKeyDictionary[torch.nn.Module, Callable[..., torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def _runner(net: torch.nn.Module, compile_: bool) -> Callable[..., torch.Tensor]:
    """``net`` itself, or its ``torch.compile`` form (compiled once per module and process)."""
    if not compile_:
        return net
    with _COMPILE_LOCK:  # worker threads share one compiled module
        if net not in _COMPILED:
            _COMPILED[net] = torch.compile(net, dynamic=False)  # type: ignore[assignment]
        return _COMPILED[net]


def sliding_probs(
    net: torch.nn.Module,
    arr: np.ndarray,
    keys: Sequence[str],
    *,
    n_classes: int,
    window: int,
    offset: tuple[int, int] = (0, 0),
    doy: torch.Tensor | None = None,
    batch_size: int = 32,
    overlap: int | None = None,
    options: InferenceOptions | None = None,
    core: tuple[slice, slice] | None = None,
    shared: SharedWindows | None = None,
    grid: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """Blend window-wise softmax outputs over a normalised array ``(…, C, H, W)``.

    Windows are anchored on multiples of the stride ``window - overlap`` (default overlap: half
    a window) counted from ``offset`` (the global index of pixel (0, 0)); ``options`` choose the
    device and precision (default: fp32 on the CPU, as the training code calls it). ``core``
    (``(slice_y, slice_x)`` of the array): only windows that touch it run, so a padded tile does
    not pay for windows that lie in its halo alone; pixels of the core get exactly the values
    they get without ``core``, pixels no window covered get NaN. ``shared``, with ``core``:
    windows reaching into another tile's core (inside ``grid``, the slices of the array that
    tiles cover; default all) are taken from it or left there for that tile, and batches have
    ``batch_size`` windows (:mod:`~eo_fusion.models.shared_windows`). Returns
    ``(n_classes, H, W)`` float32.
    """
    overlap = _checked_overlap(window, overlap)
    stride = window - overlap
    h, w = arr.shape[-2:]
    sy, sx = _starts(h, offset[0], window, stride), _starts(w, offset[1], window, stride)
    if core is not None:
        sy, sx = _touching(sy, core[0], window, h), _touching(sx, core[1], window, w)
    padded, pad_y0, pad_x0 = _padded_for(arr, sy, sx, window)
    acc = np.zeros((n_classes, *padded.shape[-2:]), dtype="float32")
    wsum = np.zeros(padded.shape[-2:], dtype="float32")
    weight = _ramp(window, overlap)
    spots = [(y + pad_y0, x + pad_x0) for y in sy for x in sx]
    opts = options or InferenceOptions(device="cpu", precision="fp32")
    device, dtype = opts.resolve()
    was_training = net.training
    if was_training:  # walking every module costs ~3 ms a tile; a loaded model is in eval mode
        net.eval()
    if any(p.device != device for p in net.parameters()):
        net.to(device)
    run = _runner(net, opts.compile)
    seen = (list(keys), doy, str(device), str(dtype), window, overlap)  # what else a window sees
    edges = _EdgeWindows.of(shared, core, grid, (h, w), (pad_y0, pad_x0), offset, window, seen)
    fixed = batch_size if opts.compile or edges is not None else 0
    with torch.inference_mode(), autocast(device, dtype):
        for (y, x), p in _window_probs(spots, padded, window, batch_size, edges, lambda wins:
                                       _forward(run, wins, keys, doy, device, fixed)):  # fmt: skip
            acc[:, y : y + window, x : x + window] += p * weight
            wsum[y : y + window, x : x + window] += weight
    if was_training:
        net.train()
    ys, xs = slice(pad_y0, pad_y0 + h), slice(pad_x0, pad_x0 + w)
    return _normalised(acc[:, ys, xs], wsum[ys, xs])


def _padded_for(
    arr: np.ndarray, sy: list[int], sx: list[int], window: int
) -> tuple[np.ndarray, int, int]:
    """``arr`` NaN-padded so that every window starting at ``sy`` × ``sx`` fits, and the
    padding before rows and columns. A tile whose halo holds every window needs none (and no
    copy of its pixels)."""
    h, w = arr.shape[-2:]
    pad_y0, pad_x0 = max(0, -sy[0]), max(0, -sx[0])
    pad_y1, pad_x1 = max(0, sy[-1] + window - h), max(0, sx[-1] + window - w)
    pad = [(0, 0)] * (arr.ndim - 2) + [(pad_y0, pad_y1), (pad_x0, pad_x1)]
    padded = np.pad(arr, pad, constant_values=np.nan) if any(map(any, pad)) else arr
    return padded, pad_y0, pad_x0


@dataclass
class _EdgeWindows:
    """Which windows of a padded tile other tiles share, and their keys in ``shared``; slices
    and positions are in the padded array's pixels."""

    shared: SharedWindows
    core: tuple[slice, slice]
    grid: tuple[slice, slice]  # the part that tiles cover
    origin: tuple[int, int]  # global index of the padded array's pixel (0, 0)
    window: int
    context: bytes  # context_digest of the call

    @classmethod
    def of(cls, shared: SharedWindows | None, core: tuple[slice, slice] | None,
           grid: tuple[slice, slice] | None, shape: tuple[int, int], pad: tuple[int, int],
           offset: tuple[int, int], window: int, seen: tuple[Any, ...],
           ) -> _EdgeWindows | None:  # fmt: skip
        """``None`` without ``shared`` or ``core``. ``core``, ``grid`` (default: all of it),
        ``shape`` and ``offset`` are those of the unpadded array, ``pad`` the rows and columns
        of padding before it; ``seen``: what else the model sees (tensors by their values)."""
        if shared is None or core is None:
            return None
        inside = grid or (slice(None), slice(None))

        def padded(s: slice, n: int, before: int) -> slice:
            lo, hi, _ = s.indices(n)
            return slice(lo + before, hi + before)

        parts = [p.cpu().numpy() if isinstance(p, torch.Tensor) else p for p in seen]
        return cls(
            shared,
            core=(padded(core[0], shape[0], pad[0]), padded(core[1], shape[1], pad[1])),
            grid=(padded(inside[0], shape[0], pad[0]), padded(inside[1], shape[1], pad[1])),
            origin=(offset[0] - pad[0], offset[1] - pad[1]),
            window=window, context=context_digest(*parts),
        )  # fmt: skip

    def uses(self, y: int, x: int) -> int:
        """Tiles that run the window at ``(y, x)`` (1: only this one)."""
        return sharing_tiles(y, self.window, self.core[0], self.grid[0]) * sharing_tiles(
            x, self.window, self.core[1], self.grid[1]
        )

    def key(self, y: int, x: int, win: np.ndarray) -> Hashable:
        return window_key(self.context, y + self.origin[0], x + self.origin[1], win)


def _window_probs(
    spots: Sequence[tuple[int, int]],
    padded: np.ndarray,
    window: int,
    batch_size: int,
    edges: _EdgeWindows | None,
    forward: Callable[[list[np.ndarray]], np.ndarray],
) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """``(spot, probabilities)`` of every window, in the order of ``spots``: taken from
    ``edges.shared`` where a neighbour left them, else run in batches of ``batch_size`` (and
    left there for the neighbours when they share the window)."""
    taken: dict[tuple[int, int], np.ndarray] = {}
    keys: dict[tuple[int, int], tuple[Hashable, int]] = {}
    if edges is not None:
        for y, x in spots:
            uses = edges.uses(y, x)
            if uses > 1:
                key = edges.key(y, x, padded[..., y : y + window, x : x + window])
                got = edges.shared.take(key)
                if got is not None:
                    taken[(y, x)] = got
                else:
                    keys[(y, x)] = (key, uses - 1)
    todo = iter([s for s in spots if s not in taken])
    ready: dict[tuple[int, int], np.ndarray] = {}
    for spot in spots:
        if spot in taken:
            yield spot, taken.pop(spot)
            continue
        if spot not in ready:  # run the next batch of windows that no neighbour left
            chunk = list(itertools.islice(todo, batch_size))  # starts with this spot
            wins = [padded[..., y : y + window, x : x + window] for y, x in chunk]
            for s, p in zip(chunk, forward(wins), strict=True):
                ready[s] = p
                if s in keys and edges is not None:  # (keys is empty without edges)
                    key, uses = keys[s]
                    edges.shared.put(key, p.copy(), uses)  # a copy: p is a view of the batch
        yield spot, ready.pop(spot)


def _checked_overlap(window: int, overlap: int | None) -> int:
    """The overlap in pixels (default: half a window), refused unless 0 <= overlap < window."""
    overlap = window // 2 if overlap is None else overlap
    if not 0 <= overlap < window:
        raise BadInputError(
            f"window overlap {overlap} px must be at least 0 and less than the window "
            f"({window} px)",
            fix="set overlap between 0 and window - 1 (half a window blends best)",
        )
    return overlap


def _normalised(acc: np.ndarray, wsum: np.ndarray) -> np.ndarray:
    """Blended probabilities ``acc / wsum``, written into ``acc``; NaN where no window ran."""
    ran = wsum > 0
    np.divide(acc, wsum, out=acc, where=ran)
    acc[:, ~ran] = np.nan
    return acc


def _touching(starts: list[int], core: slice, window: int, n: int) -> list[int]:
    """The window starts whose window overlaps ``core`` of an axis of ``n`` pixels."""
    lo, hi, _ = core.indices(n)
    return [s for s in starts if s < hi and s + window > lo]


def _forward(
    run: Callable[..., torch.Tensor],
    wins: list[np.ndarray],
    keys: Sequence[str],
    doy: torch.Tensor | None,
    device: torch.device,
    fixed_batch: int,
) -> np.ndarray:
    """Softmax probabilities (fp32, on the CPU) of a batch of windows.

    ``fixed_batch`` > 0 pads a short last batch with empty windows (a compiled model then sees
    one shape and does not recompile).
    """
    n = len(wins)
    if fixed_batch > n:
        wins = wins + [np.full_like(wins[0], np.nan)] * (fixed_batch - n)
    batch = torch.from_numpy(np.stack(wins)).to(device)
    if batch.ndim == 4:
        # Channels-last input makes every convolution after it run in the layout oneDNN and
        # cuDNN prefer, without the reorders NCHW costs (measured 1.2-1.3x per window on this
        # CPU, bf16 and fp32; the weights are left as they are, so a shared model is untouched).
        batch = batch.contiguous(memory_format=torch.channels_last)
    if doy is None:
        logits = run(batch, keys)
    else:
        logits = run(batch, keys, doy.to(device).expand(len(wins), -1))
    return logits[:n].float().softmax(dim=1).cpu().numpy()


def _stack_offset(stack: xr.Dataset, hw: tuple[int, ...]) -> tuple[int, int]:
    """Global pixel index (row, column) of the stack's first pixel on its CRS grid."""
    ys = stack["y"].values if "y" in stack.coords else np.arange(hw[0])
    xs = stack["x"].values if "x" in stack.coords else np.arange(hw[1])
    return (
        _global_offset(ys, descending=bool(ys.size > 1 and ys[1] < ys[0])),
        _global_offset(xs, descending=False),
    )


def _as_dataarray(
    out: np.ndarray,
    stack: xr.Dataset,
    section: TaskCard,
    card: ModelCard,
    task: str,
    keys: Sequence[str],
) -> xr.DataArray:
    """Probabilities with the stack's coordinates and the classes' names and colours."""
    classes = section.classes
    coords: dict[str, Any] = {"class": [c.id for c in classes]}
    for dim in ("y", "x"):
        if dim in stack.coords:
            coords[dim] = stack[dim]
    da = xr.DataArray(out.astype("float32", copy=False), dims=("class", "y", "x"), coords=coords)
    da.attrs.update(
        {
            "class_names": [c.name for c in classes],
            "class_colors": [c.color for c in classes],
            "model": card.name,
            "model_sha256": card.weights.sha256 if card.weights else "",
            "task": task,
            "bands": list(keys),
        }
    )
    for attr in ("crs", "transform"):
        if attr in stack.attrs:
            da.attrs[attr] = stack.attrs[attr]
    return da


def window_settings(
    card: ModelCard, window: int | None = None, overlap: int | None = None, *, option: str = ""
) -> tuple[int, int]:
    """``(window, overlap)`` in pixels: the arguments, else the card's inference settings
    (``inference.window``/``stride``; overlap half a window when the card gives no stride).

    Raises:
        BadInputError: the window is not a multiple of the patch size, or the overlap is not
            in ``[0, window)`` (``option`` prefixes the setting's name, e.g. ``model.``).
    """
    win = window or card.window
    patch = card.encoder.patch_size
    near = max(patch, win - win % patch)
    if win % patch or win < patch:
        raise BadInputError(
            f"{option}window {win} px is not a multiple of the model's patch size ({patch} px)",
            fix=f"set {option}window to a multiple of {patch} px, e.g. {near} px",
        )
    if overlap is None:
        stride = card.inference.stride if card.inference is not None and window is None else None
        overlap = win - stride if stride else win // 2
    if not 0 <= overlap < win:
        raise BadInputError(
            f"{option}overlap {overlap} px must be at least 0 and less than the window ({win} px)",
            fix=f"set {option}overlap between 0 and {win - 1} (half a window blends best)",
        )
    return win, overlap


def _day_of_year(time: np.ndarray) -> np.ndarray:
    return pd.DatetimeIndex(time).day_of_year.values.astype("float32")


def predict(
    stack: xr.Dataset,
    model: LoadedModel,
    *,
    task: str = "landcover",
    batch_size: int = 32,
    bands: Sequence[str] | None = None,
    device: DeviceName = "auto",
    precision: Precision = "auto",
    compile: bool = False,
    window: int | None = None,
    overlap: int | None = None,
    core: tuple[slice, slice] | None = None,
    shared: SharedWindows | None = None,
    grid: tuple[slice, slice] | None = None,
) -> xr.DataArray:
    """Class probabilities for every pixel of ``stack``.

    Args:
        stack: a ModalityStack (see docs/architecture.md).
        model: from :func:`load_model`.
        task: ``"landcover"`` (composite input) or ``"crops"`` (time series input).
        batch_size: windows per forward pass.
        bands: band keys to use instead of the card's list (unknown keys are refused by name).
        device: ``auto`` (CUDA when present, then MPS, else the CPU), ``cpu``, ``cuda``, ``mps``.
        precision: autocast ``auto`` (see the module doc), ``fp32``, ``bf16`` or ``fp16``.
        compile: run the model through ``torch.compile`` (needs a C compiler on the CPU).
        window: window edge in pixels (a multiple of the patch size); default: the card's.
        overlap: pixels a window shares with each neighbour; default: the card's stride.
        core: ``(slice_y, slice_x)`` of the pixels wanted (a tile without its halo): windows not
            touching it are skipped, pixels no window covers are NaN (see ``sliding_probs``).
        shared, grid: with ``core``, windows shared with the neighbouring tiles of this process
            (``grid``: the ``(slice_y, slice_x)`` of ``stack`` that tiles cover, default all):
            see ``sliding_probs``. The values do not change.

    Returns:
        ``(class, y, x)`` float32 probabilities on the stack's grid (coords copied from the
        stack; ``class`` holds class ids, ``attrs`` names, colours, device and precision); NaN
        where no input band has data.
    """
    opts, section = InferenceOptions(device, precision, compile), model.task(task)
    net = getattr(model, task)
    card = model.card
    arr, keys, time = select_inputs(stack, card, task, bands)
    # Embed-ability is checked before any window runs so that bad bands fail fast, by name.
    net.encoder.embed.assignments(keys)
    win, over = window_settings(card, window, overlap, option="")
    doy = None if time is None else torch.from_numpy(_day_of_year(time))
    out = sliding_probs(
        net, arr, keys, n_classes=len(section.classes), window=win, overlap=over,
        offset=_stack_offset(stack, arr.shape[-2:]), doy=doy, batch_size=batch_size,
        options=opts, core=core, shared=shared, grid=grid,
    )  # fmt: skip
    nodata = ~np.isfinite(arr).any(axis=tuple(range(arr.ndim - 2)))
    out[:, nodata] = np.nan
    da = _as_dataarray(out, stack, section, card, task, keys)
    da.attrs.update({**opts.describe(), "window": win, "overlap": over})
    if not np.isfinite(out).any() and not nodata.all():
        raise ModelError(f"model '{card.name}' produced no finite probabilities")
    return da
