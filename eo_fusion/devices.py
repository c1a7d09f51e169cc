"""Devices, mixed precision and process groups for training and prediction.

* :func:`resolve_device`: ``auto`` picks CUDA when present, then Apple MPS, else the CPU; an
  explicit ``cuda``/``mps`` that is not available is an error naming the option.
* :func:`autocast_dtype` / :func:`autocast`: ``auto`` precision is bf16 on GPUs that support it
  (fp16 otherwise, with a gradient scaler) and fp32 on the CPU, where bf16 autocast exists but is
  usually slower; ``bf16`` may be forced on the CPU.
* :func:`inference_dtype`: the same choices for prediction, where ``auto`` is also bf16 on CPUs
  with native bf16 instructions (AVX-512 BF16 or AMX): measured on such a CPU, the bundled model
  runs faster in bf16 and its class maps agree with fp32's (docs/performance.md, "Model ceiling").
* :func:`init_distributed`: reads ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and joins the process group, NCCL on CUDA and
  gloo otherwise; without that environment it is a single process.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from eo_fusion.errors import BadInputError

__all__ = [
    "DistInfo",
    "autocast",
    "autocast_dtype",
    "cpu_has_native_bf16",
    "describe_device",
    "inference_dtype",
    "init_distributed",
    "precision_name",
    "resolve_device",
]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(
    name: str = "auto", *, local_rank: int = 0, option: str = "device"
) -> torch.device:
    """The torch device for ``auto | cpu | cuda | mps`` (CUDA: this process's local GPU).

    ``option`` names the setting in errors (e.g. ``model.device`` of a map job).

    Raises:
        BadInputError: an unknown name, or ``cuda``/``mps`` asked for where it is absent.
    """
    name = name.lower()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise BadInputError(
                f"{option} 'cuda' was asked for but no CUDA GPU is visible",
                fix=f"set {option}: auto or cpu, or check CUDA_VISIBLE_DEVICES and the driver",
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps":
        if not _mps_available():
            raise BadInputError(
                f"{option} 'mps' was asked for but Apple MPS is not available here",
                fix=f"set {option}: auto or cpu",
            )
        return torch.device("mps")
    if name != "cpu":
        raise BadInputError(
            f"unknown {option} {name!r}", fix=f"set {option} to auto, cpu, cuda or mps"
        )
    return torch.device("cpu")


@functools.cache  # read once per process: every tile asks
def cpu_has_native_bf16() -> bool:
    """The CPU has bf16 matrix instructions (x86 AVX-512 BF16 or AMX-BF16; Linux flags).

    Without them oneDNN emulates bf16 and is slower than fp32, so ``auto`` stays fp32 there.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:  # not Linux: no cheap, reliable test
        return False
    return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for a device and ``auto | fp32 | bf16 | fp16``; ``None`` = fp32."""
    precision = precision.lower()
    if precision == "fp32":
        return None
    kind = device.type
    if precision == "auto":
        if kind == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if kind == "mps" else None
    if precision == "bf16":
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise BadInputError(
                f"precision bf16 is not supported on {torch.cuda.get_device_name(device)}",
                fix="use precision: fp16 or auto",
            )
        return torch.bfloat16
    if precision == "fp16":
        if kind == "cpu":
            raise BadInputError("precision fp16 is not supported on the CPU", fix="use bf16")
        return torch.float16
    raise BadInputError(f"unknown precision {precision!r}", fix="use auto, fp32, bf16 or fp16")


def inference_dtype(
    device: torch.device, precision: str = "auto", *, option: str = "precision"
) -> torch.dtype | None:
    """The autocast dtype for prediction (``None`` = fp32).

    As :func:`autocast_dtype`, except that ``auto`` on the CPU is bf16 where the CPU has native
    bf16 instructions (:func:`cpu_has_native_bf16`) and fp32 elsewhere. ``option`` names the
    setting in errors.
    """
    if precision.lower() == "auto" and device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    try:
        return autocast_dtype(device, precision)
    except BadInputError as e:
        if option == "precision":
            raise
        raise BadInputError(f"{option}: {e.message}", fix=e.fix) from None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` for the device with ``dtype``; a no-op for fp32."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def needs_scaler(device: torch.device, dtype: torch.dtype | None) -> bool:
    """fp16 on CUDA needs loss scaling (bf16 has fp32's range and does not)."""
    return dtype == torch.float16 and device.type == "cuda"


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the process group (``world == 1``: no group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, curves and reports."""
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (else: one process).

    The backend is NCCL when this process trains on CUDA and gloo otherwise (CPU, MPS).
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        device = resolve_device(device_name, local_rank=local)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world=world, local_rank=local)


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for an autocast dtype (``None`` = fp32)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")  # type: ignore[arg-type]


def describe_device(device: torch.device, dtype: torch.dtype | None) -> dict[str, str]:
    """Device and precision in words, for reports and model cards."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"device": str(device), "name": name, "precision": str(dtype or torch.float32)}
