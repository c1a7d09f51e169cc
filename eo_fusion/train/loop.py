"""The fine-tuning loop of training jobs: any device, mixed precision, DDP, exact resume.

Determinism is what makes data-parallel runs and resumes comparable:

* the global batch of step ``s`` is drawn from ``default_rng([seed, s])`` and each sample's
  augmentation from ``default_rng([seed, s, position])``, identical in every process; process
  ``r`` of ``W`` takes positions ``[r*B/W, (r+1)*B/W)`` of the global batch ``B``;
* each process divides its summed loss by the *global* weight (an all-reduced count of labelled
  pixels or fields), so the averaged DDP gradient equals the one-process gradient of the global
  batch;
* batch-norm statistics are computed over the global batch (:class:`GlobalBatchNorm2d`, a
  differentiable all-reduce that works with gloo, unlike ``SyncBatchNorm`` which needs GPUs);
* checkpoints (``last/``: weights, optimiser, step, curve) are written atomically every
  ``checkpoint_every`` steps by rank 0, and a resumed run continues at the next step with the
  same batches, so its curve is the uninterrupted one.

Two gloo processes then follow the one-process loss curve up to float summation order (the test
asserts a relative difference below 1e-4 over 6 steps).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from eo_fusion.devices import DistInfo, autocast, needs_scaler
from eo_fusion.errors import BadInputError
from eo_fusion.files import atomic_write_text
from eo_fusion.train.pretrain import lr_at

log = logging.getLogger(__name__)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum): the gradient of a sum over processes is summed too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every process (any backend)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        xf = x.float()
        c = xf.shape[1]
        n = torch.tensor([xf.numel() / c], dtype=xf.dtype, device=xf.device)
        packed = _AllReduceSum.apply(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), n]))
        total = packed[-1]
        mean = packed[:c] / total
        var = (packed[c : 2 * c] / total - mean * mean).clamp(min=0)
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            assert self.running_mean is not None and self.running_var is not None
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * total / (total - 1).clamp(min=1))
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
        y = (xf - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def global_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d for :class:`GlobalBatchNorm2d` in place (same state dict)."""
    for child in module.children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm2d):
            child.__class__ = GlobalBatchNorm2d
        else:
            global_batchnorm(child)
    return module


@dataclass(frozen=True)
class LoopOptions:
    """What the loop needs from the training spec (plus where it runs)."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    checkpoint_every: int
    seed: int
    resume_key: str
    device: torch.device
    dtype: torch.dtype | None
    compile: bool = False


def global_batch(seed: int, step: int, n: int, size: int) -> np.ndarray:
    """Sample indices of step ``step``'s global batch (the same in every process)."""
    rng = np.random.default_rng([seed, step])
    return rng.choice(n, size=size, replace=n < size)


def _my_share(batch: np.ndarray, dist: DistInfo) -> tuple[np.ndarray, int]:
    if len(batch) % dist.world:
        raise BadInputError(
            f"training.batch_size {len(batch)} is not a multiple of the {dist.world} processes",
            fix="choose a global batch the process count divides",
        )
    per = len(batch) // dist.world
    return batch[dist.rank * per : (dist.rank + 1) * per], dist.rank * per


def _all_sum(value: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    if dist.world > 1:
        import torch.distributed as tdist

        value = value.detach().clone()
        tdist.all_reduce(value)
    return value


def _save_checkpoint(folder: Path, net: nn.Module, opt: torch.optim.Optimizer, meta: dict) -> None:
    """``folder`` replaced atomically: written next to it, then renamed into place."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()},
        str(tmp / "weights.safetensors"),
    )
    flat = {
        f"{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous().cpu()
        for i, st in opt.state_dict()["state"].items()
        for k, v in st.items()
    }
    save_file(flat, str(tmp / "optimizer.safetensors"))
    atomic_write_text(tmp / "state.json", json.dumps(meta))
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, net: nn.Module, opt: torch.optim.Optimizer, key: str):
    """``(step, curve)`` of a matching checkpoint (weights and optimiser loaded), else None."""
    state = folder / "state.json"
    if not state.is_file():
        return None
    meta = json.loads(state.read_text(encoding="utf-8"))
    if meta.get("resume_key") != key:
        log.warning("%s holds a run of other settings; training from the start", folder)
        return None
    net.load_state_dict(load_file(folder / "weights.safetensors"))
    sd = opt.state_dict()
    st: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in load_file(folder / "optimizer.safetensors").items():
        i, name = k.split(".", 1)
        st.setdefault(int(i), {})[name] = v
    sd["state"] = st
    opt.load_state_dict(sd)
    return int(meta["step"]), list(meta["curve"])


def _wrap(net: nn.Module, opts: LoopOptions, dist: DistInfo) -> nn.Module:
    if dist.world > 1:
        global_batchnorm(net)
        ids = [opts.device.index] if opts.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids, find_unused_parameters=True)
    if opts.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    return net


def fit(
    net: nn.Module,
    task: Any,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    opts: LoopOptions,
    out: Path,
    *,
    dist: DistInfo = DistInfo(),
    weight: torch.Tensor | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> list[list[float]]:
    """Train ``net`` on ``task`` for ``opts.steps`` steps; returns the curve ``[step, loss, s]``.

    ``forward(model, x)`` runs the model on a batch (it knows the band keys and dates);
    ``on_step(step, loss)`` is called after every step (progress, tests).
    """
    net.to(opts.device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    last = Path(out) / "last"
    start, curve = 0, []
    resumed = _load_checkpoint(last, net, opt, opts.resume_key)
    if resumed is not None:
        start, curve = resumed
        curve = curve[:start]
        log.info("resuming training at step %d from %s", start, last)
    model = _wrap(net, opts, dist)
    scaler = torch.amp.GradScaler("cuda") if needs_scaler(opts.device, opts.dtype) else None
    w = weight.to(opts.device) if weight is not None else None
    model.train()
    t0 = time.perf_counter()
    for step in range(start, opts.steps):
        mine, offset = _my_share(global_batch(opts.seed, step, len(task), opts.batch_size), dist)
        batch = task.batch(mine.tolist(), step, opts.seed, offset)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, opts)
        with autocast(opts.device, opts.dtype):
            logits = forward(model, batch["x"].to(opts.device))
        total, denom = task.loss(logits, batch, w)
        denom = _all_sum(denom, dist)
        loss = total / denom.clamp(min=1e-12) * dist.world
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        value = float(_all_sum(total.detach(), dist) / denom.clamp(min=1e-12))
        curve.append([step + 1, value, round(time.perf_counter() - t0, 3)])
        if dist.is_main and ((step + 1) % opts.checkpoint_every == 0 or step + 1 == opts.steps):
            meta = {"step": step + 1, "curve": curve, "resume_key": opts.resume_key}
            _save_checkpoint(last, net, opt, meta)
        if on_step is not None:
            on_step(step + 1, value)
    model.eval()
    return curve


def write_curve(curve: list[list[float]], path: Path) -> None:
    """``loss.csv``: step, loss, seconds since the (re)start."""
    lines = ["step,loss,seconds"] + [f"{int(s)},{loss:.6f},{t}" for s, loss, t in curve]
    atomic_write_text(path, "\n".join(lines) + "\n")
