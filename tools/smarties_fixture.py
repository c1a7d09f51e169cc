"""Build the SMARTIES equality fixture in tests/fixtures/smarties/ by running the reference code.

This script does not ship or contain any SMARTIES code: it imports the reference implementation
from a checkout that the user provides, builds small random-weight models with it, and records
what *its* forward pass returns. ``tests/unit/test_smarties.py`` then checks that
``eo_fusion.models.import_smarties`` + ``eo_fusion.api.embed`` return the same tokens.

Usage (in a separate virtual environment, never the project's)::

    git clone https://github.com/gsumbul/SMARTIES /tmp/smarties-src   # commit fc0df04 was used
    python -m venv /tmp/smarties-ref-venv
    /tmp/smarties-ref-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm==0.9.16 \
        pyyaml safetensors scikit-learn tqdm rasterio scikit-image
    /tmp/smarties-ref-venv/bin/python tools/smarties_fixture.py /tmp/smarties-src \
        tests/fixtures/smarties

What it writes:

* ``vit.safetensors``: a downstream ``SmartiesVisionTransformer`` (timm ViT layout with
  ``spectrum_projection.spectrum_embeds.{i}.proj.*``, ``cls_token``, ``pos_embed``, ``head.*``):
  width 128, depth 2, 2 heads of 64 (the published head width), patch 4, image 16. All weights
  are random; the positional embedding is SMARTIES's sin-cos table plus noise, so a loader that
  recomputes it instead of using the stored one fails the test.
* ``mae.safetensors``: a pretraining ``SMARTIES`` model (``decoder_*``, ``decoder_preds.*``,
  ``mask_token``): width 128, depth 2, decoder 64 × 1 block × 2 heads, random weights.
* ``cases.safetensors`` + ``cases.json``: for each case the physical input (S2 reflectance
  0–1, S1 backscatter in dB), the input after SMARTIES's own ``ImageNormalizeStandardize``
  (1st/99th-percentile clip, then standardisation, with the statistics of
  ``config/pretraining_sensors.yaml``), and the tokens of both models: the output of the last
  encoder block before the final norm, CLS first, captured with a forward hook during
  SMARTIES's all-tokens forward (``all_tokens=True``, ``is_patchify=True``). The script checks
  that the hooked tokens without CLS equal what the all-tokens path returns.

Cases: ``s2_l2a`` (the 12 L2A bands in SMARTIES order), ``s1`` (VV, VH) and ``subset`` (five S2
bands in shuffled order, normalised through ``selected_bands``).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

#: Registry key -> SMARTIES spectral-range name (config/electromagnetic_spectrum.yaml). Kept apart
#: from ``models.spectral.SMARTIES_KEYS`` on purpose: the fixture must not inherit a wrong mapping.
KEY_TO_RANGE = {
    "s2:B01": "aerosol",
    "s2:B02": "blue_1",
    "s2:B03": "green_2",
    "s2:B04": "red_2",
    "s2:B05": "red_edge_1",
    "s2:B06": "red_edge_2",
    "s2:B07": "near_infrared_2",
    "s2:B08": "near_infrared_1",
    "s2:B8A": "near_infrared_3",
    "s2:B09": "short_wave_infrared_1",
    "s2:B11": "short_wave_infrared_3",
    "s2:B12": "short_wave_infrared_4",
    "s1:VV": "microwave_1",
    "s1:VH": "microwave_2",
}
L2A_KEYS = [
    "s2:B01", "s2:B02", "s2:B03", "s2:B04", "s2:B05", "s2:B06",
    "s2:B07", "s2:B08", "s2:B8A", "s2:B09", "s2:B11", "s2:B12",
]  # fmt: skip
SUBSET = ["s2:B8A", "s2:B03", "s2:B12", "s2:B05", "s2:B02"]
IMG, PATCH, DIM, DEPTH, HEADS = 16, 4, 128, 2, 2


def _randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights everywhere (LayerNorms near 1, the rest small), so no term is trivial."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name == "pos_embed" or name == "decoder_pos_embed":
                p.add_(0.1 * noise)
            else:
                p.copy_(0.05 * noise)


def _tokens(vit: Any, img: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """SMARTIES's all-tokens forward; the last block's full output is captured by a hook."""
    seen: list[torch.Tensor] = []
    hook = vit.blocks[-1].register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    with torch.no_grad():
        grid = vit.forward_encoder((img, proj), is_patchify=True)
    hook.remove()
    full = seen[0]
    b, d = full.shape[0], full.shape[-1]
    assert torch.equal(full[:, 1:].permute(0, 2, 1).reshape(b, d, *grid.shape[-2:]), grid)
    return full


def main(src: Path, out: Path) -> None:
    sys.path.insert(0, str(src))
    from models_smarties import SMARTIES
    from models_smarties_vit import SmartiesVisionTransformer
    from utils.data_utils import ImageNormalizeStandardize
    from utils.model_utils import get_2d_sincos_pos_embed

    spectrum = yaml.safe_load((src / "config/electromagnetic_spectrum.yaml").read_text())
    sensors = yaml.safe_load((src / "config/pretraining_sensors.yaml").read_text())
    gen = torch.Generator().manual_seed(20250625)
    torch.manual_seed(0)

    vit = SmartiesVisionTransformer(
        spectrum_specs=spectrum, img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH,
        num_heads=HEADS, mlp_ratio=4, qkv_bias=True, num_classes=5, all_tokens=True,
        norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
    ).eval()  # fmt: skip
    _randomise(vit, gen)
    mae = SMARTIES(
        spectrum_specs=spectrum, mixed_precision="no", img_size=IMG, patch_size=PATCH,
        embed_dim=DIM, depth=DEPTH, num_heads=HEADS, decoder_embed_dim=64, decoder_depth=1,
        decoder_num_heads=2, mlp_ratio=4, norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
    ).eval()  # fmt: skip
    _randomise(mae, gen)
    with torch.no_grad():  # the MAE keeps SMARTIES's fixed sin-cos tables, as it trains them
        for name in ("pos_embed", "decoder_pos_embed"):
            table = get_2d_sincos_pos_embed(getattr(mae, name).shape[-1], IMG // PATCH, True)
            getattr(mae, name).copy_(torch.from_numpy(table).float()[None])
    # The downstream ViT that SMARTIES builds from a pretraining checkpoint (main_downstream.py:
    # load_state_dict(strict=False), only the head missing).
    vit_from_mae = copy.deepcopy(vit)
    missing = vit_from_mae.load_state_dict(mae.state_dict(), strict=False).missing_keys
    assert set(missing) == {"head.weight", "head.bias"}, missing

    rng = np.random.default_rng(7)
    cases: dict[str, dict] = {}
    tensors: dict[str, torch.Tensor] = {}
    s2 = rng.uniform(0.0, 0.6, (2, 12, IMG, IMG)).astype("float32")  # reflectance, some clipped
    s1 = rng.uniform(-35.0, 0.0, (2, 2, IMG, IMG)).astype("float32")  # dB, some clipped
    specs = [
        ("s2_l2a", L2A_KEYS, s2, "SENTINEL2-L2A", list(range(12)), 1e4),
        ("s1", ["s1:VV", "s1:VH"], s1, "SENTINEL1-GRD", [0, 1], 1.0),
        ("subset", SUBSET, s2, "SENTINEL2-L2A", [L2A_KEYS.index(k) for k in SUBSET], 1e4),
    ]
    for name, keys, phys, sensor, selected, to_sensor_units in specs:
        spec = copy.deepcopy(sensors[sensor])
        spec["selected_bands"] = selected
        norm = ImageNormalizeStandardize(spec)
        normed = np.stack([norm(img * to_sensor_units)[0] for img in phys]).astype("float32")
        # What a user of this band subset would hold: only its own channels, in its order.
        x_phys = phys[:, selected]
        proj_idx = [spectrum[KEY_TO_RANGE[k]]["projection_idx"] for k in keys]
        proj = torch.tensor(proj_idx, dtype=torch.int32).reshape(1, 1, 1, -1)
        proj = proj.expand(2, IMG // PATCH, IMG // PATCH, -1).contiguous()
        img = torch.from_numpy(normed)
        tensors[f"{name}.physical"] = torch.from_numpy(np.ascontiguousarray(x_phys))
        tensors[f"{name}.normalized"] = img
        tensors[f"{name}.tokens_vit"] = _tokens(vit, img, proj)
        tensors[f"{name}.tokens_mae"] = _tokens(vit_from_mae, img, proj)
        cases[name] = {"bands": keys, "sensor": sensor, "projection_idx": proj_idx}

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in vit.state_dict().items()}, str(out / "vit.safetensors")
    )
    save_file(
        {k: v.contiguous() for k, v in mae.state_dict().items()}, str(out / "mae.safetensors")
    )
    save_file(tensors, str(out / "cases.safetensors"))
    meta = {
        "reference": "gsumbul/SMARTIES @ fc0df04415384f1cfce97f8db3c2cc320bf87d52 (Apache-2.0)",
        "generator": "tools/smarties_fixture.py",
        "torch": torch.__version__,
        "model": {"dim": DIM, "depth": DEPTH, "heads": HEADS, "patch": PATCH, "image": IMG},
        "cases": cases,
    }
    (out / "cases.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: smarties_fixture.py SMARTIES_CHECKOUT OUT_FOLDER")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
