"""Regenerate the bundled model and docs/model.md (``make model``).

Run as ``python -m eo_fusion.train.bundle``.

Steps (each is also a CLI command, printed in docs/model.md):

1. ``eo-fusion pretrain pipelines/pretrain_sample.yaml`` — MAE on all sample imagery;
2. ``eo-fusion finetune pipelines/finetune_landcover_sample.yaml`` — land cover, pretrained;
3. ``eo-fusion finetune pipelines/finetune_landcover_sample_random.yaml`` — same, random init;
4. the per-pixel random-forest baseline on the same inputs and hold-out;
5. ``eo-fusion finetune pipelines/finetune_crops_sample.yaml`` — temporal head;
6. merge the two heads into ``eo_fusion/data/model/`` (float16 safetensors + model card), draw
   masked reconstructions and the loss curve into ``docs/``, and write ``docs/model.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eo_fusion.config import PROJECT_ROOT
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.config import FinetuneSpec, load_finetune_spec, load_pretrain_spec
from eo_fusion.train.baselines import random_forest_baseline
from eo_fusion.train.data import Scene, crop, normalise
from eo_fusion.train.finetune import finetune, merge_tasks
from eo_fusion.train.pretrain import pretrain
from eo_fusion.train.sources import load_scenes

PIPELINES = PROJECT_ROOT / "pipelines"
DOCS = PROJECT_ROOT / "docs"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def reconstruction_figure(model: ck.LoadedModel, scenes: list[Scene], path: Path) -> None:
    """Masked-patch reconstructions of a few sample windows (RGB of S2 bands)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    assert model.mae is not None
    stats = model.card["normalization"]
    rgb = ["s2:B04", "s2:B03", "s2:B02"]
    picks: list[tuple[Scene, str]] = []
    for sc in scenes:
        for mod, keys in sc.keys.items():
            if all(k in keys for k in rgb) and len(picks) < 3:
                picks.append((sc, mod))
                break
    size = model.card["inference"]["window"] * 2
    p = model.encoder.cfg.patch_size
    fig = Figure(figsize=(9, 3 * len(picks)))
    axes = fig.subplots(len(picks), 3, squeeze=False)
    gen = torch.Generator().manual_seed(1)
    for row, (sc, mod) in enumerate(picks):
        arr = normalise(sc, stats).arrays[mod]
        if arr.ndim == 4:  # clearest date of a time series
            arr = arr[int(np.argmax(np.isfinite(arr).mean(axis=(1, 2, 3))))]
        h, w = sc.shape
        win = crop(arr, max(0, (h - size) // 2), max(0, (w - size) // 2), size)
        x = torch.from_numpy(win[None])
        keys = sc.keys[mod]
        per_patch = model.card["training"]["pretrain"]["spec"].get("target_norm") == "patch"
        with torch.inference_mode():
            out = model.mae(x, keys, generator=gen)
        idx = [keys.index(k) for k in rgb]
        tgt = torch.from_numpy(win[None])
        # Undo the per-patch normalisation of the targets to show predictions in input units.
        from eo_fusion.models.mae import patchify, unpatchify

        pred = out.pred[:, : len(keys)]
        if per_patch:
            tp = patchify(tgt, p)
            mean = torch.nanmean(tp, dim=-1, keepdim=True)
            std = torch.sqrt(torch.nanmean((tp - mean) ** 2, dim=-1, keepdim=True) + 1e-6)
            pred = unpatchify(patchify(pred, p) * std + mean, p, size, size)
        m = out.mask.reshape(1, 1, size // p, size // p)
        m = m.repeat_interleave(p, 2).repeat_interleave(p, 3)[0, 0].numpy().astype(bool)
        orig = win[idx]
        masked = np.where(m, np.nan, orig)
        recon = np.where(m, pred[0, idx].numpy(), orig)
        lo, hi = np.nanpercentile(orig, 2), np.nanpercentile(orig, 98)
        for col, (img, title) in enumerate(
            ((orig, "input"), (masked, "75 % of patches masked"), (recon, "reconstruction"))
        ):
            show = np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0, 1).transpose(1, 2, 0)
            axes[row, col].imshow(show)
            axes[row, col].set_title(f"{sc.name[:28]} {mod}\n{title}", fontsize=8)
            axes[row, col].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _with(spec: FinetuneSpec, **kw: Any) -> FinetuneSpec:
    return spec.model_copy(update=kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ck.BUNDLED_DIR, help="bundled model folder")
    ap.add_argument("--quick", action="store_true", help="few steps (smoke test, not for release)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted pretraining run")
    args = ap.parse_args(argv)
    progress = not args.no_progress
    t0 = time.perf_counter()
    pre_spec = load_pretrain_spec(PIPELINES / "pretrain_sample.yaml")
    lc_spec = load_finetune_spec(PIPELINES / "finetune_landcover_sample.yaml")
    rnd_spec = load_finetune_spec(PIPELINES / "finetune_landcover_sample_random.yaml")
    crop_spec = load_finetune_spec(PIPELINES / "finetune_crops_sample.yaml")
    if args.quick:
        pre_spec = pre_spec.model_copy(update={"steps": 20})
        lc_spec, rnd_spec, crop_spec = (_with(s, steps=10) for s in (lc_spec, rnd_spec, crop_spec))
    if not args.resume:  # a release run starts from scratch
        shutil.rmtree(pre_spec.out, ignore_errors=True)
    scenes = load_scenes(pre_spec.data, progress=progress)
    pretrained = pretrain(pre_spec, scenes, progress=progress)
    lc_scenes = load_scenes(lc_spec.data, progress=progress)
    lc = finetune(lc_spec, lc_scenes, pretrained, progress=progress)
    ck.save(lc, lc_spec.out)
    rnd = finetune(rnd_spec, lc_scenes, None, progress=progress)
    ck.save(rnd, rnd_spec.out)
    rf = random_forest_baseline(lc_spec, lc_scenes)
    crop_scenes = load_scenes(crop_spec.data, progress=progress)
    crops = finetune(crop_spec, crop_scenes, pretrained, progress=progress)
    ck.save(crops, crop_spec.out)
    bundled = merge_tasks([lc, crops], "eo-fusion-sample")
    bundled.card["training"]["baselines"] = {
        "landcover_random_init": rnd.card["tasks"]["landcover"]["metrics"]["holdout"],
        "landcover_random_forest": rf,
    }
    bundled.card["training"]["data_statement"] = DATA_STATEMENT
    ck.save(bundled, args.out, dtype=torch.float16)
    DOCS.mkdir(exist_ok=True)
    shutil.copy(Path(pre_spec.out) / "loss.png", DOCS / "model_pretrain_loss.png")
    reconstruction_figure(pretrained, scenes, DOCS / "model_reconstructions.png")
    write_docs(
        bundled,
        pretrained,
        rf,
        rnd,
        crops,
        time.perf_counter() - t0,
        quick=args.quick,
        out=args.out,
    )
    print(f"bundled model written to {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


DATA_STATEMENT = (
    "The labelled data is tiny: one Slovenian scene of 100 × 101 pixels at 10 m (about 1 km²) "
    "with 9,945 labelled pixels in five land-use classes, one of which (cultivated land) has "
    "only 11 pixels. The hold-out is a quarter of the 25 × 25 px blocks of that same scene. "
    "The figures show that the pipeline works end to end; they are not evidence of accuracy "
    "elsewhere."
)


def write_docs(
    bundled: ck.LoadedModel,
    pretrained: ck.LoadedModel,
    rf: dict,
    rnd: ck.LoadedModel,
    crops: ck.LoadedModel,
    seconds: float,
    *,
    quick: bool,
    out: Path,
) -> None:
    """Write docs/model.md from the measured numbers."""
    lc = bundled.card["tasks"]["landcover"]
    lm = lc["metrics"]["holdout"]
    rm = rnd.card["tasks"]["landcover"]["metrics"]["holdout"]
    cm = crops.card["tasks"]["crops"]["metrics"]["holdout"]
    pre = pretrained.card["training"]["pretrain"]
    enc = bundled.card["architecture"]["encoder"]
    names = {str(c["id"]): c["name"] for c in lc["classes"]}
    rows = [
        (
            "pretrained + fine-tuned (bundled)",
            lm,
            "eo-fusion finetune pipelines/finetune_landcover_sample.yaml",
        ),
        (
            "same head and encoder, random init",
            rm,
            "eo-fusion finetune pipelines/finetune_landcover_sample_random.yaml",
        ),
        ("per-pixel random forest (200 trees)", rf, "python -m eo_fusion.train.bundle (step 4)"),
        (
            "temporal head, 5-date S2 series (bundled)",
            cm,
            "eo-fusion finetune pipelines/finetune_crops_sample.yaml",
        ),
    ]
    table = "\n".join(
        f"| {name} | {_pct(m['oa'])} | {_pct(m['miou'])} | {_pct(m['f1_macro'])} | `{cmd}` |"
        for name, m, cmd in rows
    )
    per_class = "\n".join(
        f"| {names[c]} ({c}) | {v['n_ref']} | {_pct(v['iou'])} | "
        f"{_pct(rm['per_class'][c]['iou'])} | {_pct(rf['per_class'][c]['iou'])} |"
        for c, v in lm["per_class"].items()
    )
    hold = lc["training"]["holdout"]
    curve = np.loadtxt(
        Path(pretrained.card["training"]["pretrain"]["spec"]["out"]) / "loss.csv",
        delimiter=",",
        skiprows=1,
        usecols=1,
    )
    first, last = float(curve[:50].mean()), float(curve[-50:].mean())
    scene_list = ", ".join(s["name"] for s in pre["scenes"])
    text = TEMPLATE.format(
        quick="\n> **Quick smoke-test build: numbers below are not the release figures.**\n"
        if quick
        else "",
        statement=DATA_STATEMENT,
        size=enc["size"],
        patch=enc["patch_size"],
        window=bundled.card["inference"]["window"],
        ranges=", ".join(enc["ranges"]),
        n_params=bundled.card["weights"]["n_parameters"],
        mb=(Path(out) / ck.WEIGHTS).stat().st_size / 1e6,
        sha=bundled.card["weights"]["sha256"],
        table=table,
        per_class=per_class,
        train_px=hold["train_pixels"],
        hold_px=hold["holdout_pixels"],
        steps=pre["spec"]["steps"],
        first=first,
        last=last,
        scenes=scene_list,
        n_scenes=len(pre["scenes"]),
        seconds=seconds,
        lc_inputs=json.dumps(lc["inputs"]),
        crop_inputs=json.dumps(bundled.card["tasks"]["crops"]["inputs"]),
    )
    from eo_fusion.evaluate.report import carry_section

    page = DOCS / "model.md"
    old = page.read_text(encoding="utf-8") if page.exists() else ""
    page.write_text(carry_section(old, text), encoding="utf-8")  # keeps `eo-fusion evaluate`'s part


TEMPLATE = """# The spectrum-aware model

<!-- Generated by `python -m eo_fusion.train.bundle` (`make model`); edit the template there. -->
{quick}
eo-fusion ships a small SMARTIES-style model (Sosa et al. 2025, arXiv:2506.19585, reimplemented
here, no code or weights from it) trained only on the embedded sample data.

**How small the data is.** {statement}

## Architecture

* **Spectral embedding** (`eo_fusion/models/spectral.py`): every band is looked up in the band
  registry by its key (`s2:B04`, `s1:VV`, `aerial:nir`, `elevation:dem`, ...). Each spectral range
  (13 optical ranges from the Sentinel-2 response table; SAR VV and VH; non-spectral keys for
  elevation, height, slope, aspect, NDVI and OSM layers) has one `patch × patch → D` projection.
  A token is the mean of the projections of the bands present: any subset and order of bands
  works, absent bands are left out (never zero-filled). A band whose wavelength falls outside the
  trained ranges is projected with an inverse-distance blend of the two nearest trained ranges; a
  band with neither a wavelength nor a trained range is refused with a `BandError` naming it.
* **Encoder** (`encoder.py`): ViT with fixed 2-D sin-cos positions computed for any grid size.
  Named sizes: `nano` (128 wide, 4 blocks; the bundled one), `tiny`, `small`, and the published
  `base` (ViT-B, 768 × 12) and `large` (ViT-L, 1024 × 24).
* **Pretraining** (`mae.py`, `eo-fusion pretrain`): MAE with a 0.75 mask ratio, a decoder
  (8 × 512 for base/large, 2 × 128 for nano), one reconstruction head per spectral range,
  a normalised-pixel loss on masked patches (per patch as in MAE, or per band: the bundled
  model uses per-band standardised targets because with 4 px patches per-patch normalisation
  left mostly noise to predict and the loss stayed at 1.0), cross-sensor token mixup (half of
  the patch positions taken from a co-located image of another modality before masking;
  targets are the bands of both),
  band/modality dropout, resumable checkpoints (`<out>/last`), loss curve (`loss.csv`, `loss.png`).
* **Heads** (`heads.py`, `eo-fusion finetune`): land cover = features of 4 encoder blocks into a
  simple feature pyramid (×4, ×2, ×1, ×½), FPN top-down fusion and UPerNet-style concatenation,
  full-resolution logits; crops = the encoder on every date, one temporal-attention block per
  level with a day-of-year code and attention pooling (dates with no data are masked out), then
  the same dense decoder. Fine-tuning modes `frozen`, `partial` (last N blocks), `full`; class
  weights; ignore index; metrics OA, mIoU, per-class IoU and F1 (`eo_fusion/train/metrics.py`).
* **Checkpoints** (`checkpoint.py`): `model.safetensors` + `model_card.json` (architecture, inputs
  per task, normalisation statistics per modality and band, classes with names and colours,
  training data and provenance, metrics, code version, sha256 checked on load). Nothing is
  unpickled. `import_smarties()` maps published SMARTIES ViT-B/L safetensors onto this layout
  (tested with a state dict built in that layout; the real files are not reachable from here,
  so the projection order `SMARTIES_RANGE_ORDER` must be checked against them).

## The bundled model

`eo_fusion/data/model/`: ViT-{size}, patch {patch} px, inference window {window} px,
{n_params:,} stored values in float16 ({mb:.1f} MB), sha256 `{sha}`.
Trained ranges: {ranges}.

* Land cover (`task="landcover"`), inputs: `{lc_inputs}` (the DEM is optional: without it the
  model runs on the S2 bands alone). Job files must request exactly these modality names and a
  composite for `s2-l1c`.
* Crops (`task="crops"`), inputs: `{crop_inputs}` as a time series (`mode: timeseries`).

Pretraining used {n_scenes} scenes ({scenes}), each on its own native grid, never mixed:
{steps} steps; the masked reconstruction loss fell from {first:.3f} (mean of the first 50 steps) to
{last:.3f} (last 50). Whole build: {seconds:.0f} s on this 2-core CPU (`make model`).

![pretraining loss](model_pretrain_loss.png)

Masked reconstructions (pretrained MAE; 75 % of the 4 × 4 px patches hidden; the masked patches
in the right column are the model's prediction alone, from the visible quarter). They are
blurry, close to the local mean colour: that is what 1,500 CPU steps on a few km² of imagery
learn, shown as is:

![reconstructions](model_reconstructions.png)

## Hold-out results (Slovenia, spatial block hold-out)

{train_px} labelled training pixels; {hold_px} hold-out pixels in whole 25 × 25 px blocks that
were never seen with labels. Percentages (OA, mIoU and macro F1 over the classes present in the
hold-out):

| model | OA | mIoU | F1 | reproduce with |
|---|---|---|---|---|
{table}

All rows come from one run of `make model` (`python -m eo_fusion.train.bundle`), which runs
the same configs; each fine-tuning command needs `eo-fusion pretrain
pipelines/pretrain_sample.yaml` first. Seeds are fixed; on another CPU the numbers can move by
a few points.

Per-class IoU on the hold-out (%), land-cover head:

| class | hold-out px | pretrained | random init | random forest |
|---|---|---|---|---|
{per_class}

## Using it

```python
from eo_fusion.models import load_model, predict

model = load_model()  # the bundled model; or load_model("path/to/folder")
probs = predict(stack, model, task="landcover")  # (class, y, x) float32 on the stack grid
```

`predict` runs the model on windows of {window} px anchored on the global pixel grid of the
stack's CRS (stride half a window) and blends them with tent weights, so a tile's result does
not depend on the tile size for pixels at least {window} − 1 px from its edge: give tiles a halo
of at least that much. Pixels without any input data get NaN.

`eo-fusion model info` prints the card; `--json` prints all of it.

## Inference benchmark

`.venv/bin/python benchmarks/bench_inference.py --size 256 --threads 2` times `predict` on a
256 × 256 px tile (289 windows of 32 px) and counts the model's FLOPs with
`torch.utils.flop_counter` (matmuls, convolutions, attention). Measured by hand on the 2-core
build machine (Intel Xeon, 2 threads, 2026-11-27; not regenerated by `make model`): fp32 matmul
peak 172 GFLOP/s; with 32 windows per batch a tile took 0.57 s, i.e. 0.11 Mpx/s and
127 GFLOP/s (74 % of the matmul peak), with 152 MiB peak memory growth per tile; with the
default 8 windows per batch 0.69 s, 0.095 Mpx/s, 61 %, 64 MiB. Each pixel is computed in four
overlapping windows, the price of tile-size independence.

## Benchmark datasets

`eo_fusion/train/adapters.py` reads PASTIS / PASTIS-R (`S2_<id>.npy`, `S1A_<id>.npy`,
`TARGET_<id>.npy`, `metadata.geojson`) and FLAIR-HUB (aerial, elevation, S2/S1 time series,
19 land-cover and 23 crop codes) into ModalityStacks; configs:
`pipelines/finetune_pastis.yaml`, `pipelines/finetune_flair_hub.yaml`. These datasets are not
reachable from the build machines: the adapters are tested on small files written in the
published layouts.
"""


if __name__ == "__main__":
    raise SystemExit(main())
