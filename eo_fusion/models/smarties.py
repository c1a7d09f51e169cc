"""Import of published SMARTIES checkpoints (safetensors) as eo-fusion models.

SMARTIES: G. Sumbul, C. Xu, E. Dalsasso and D. Tuia, "SMARTIES: Spectrum-Aware Multi-Sensor
Auto-Encoder for Remote Sensing Images", ICCV 2025, arXiv:2506.19585; code and weights under
Apache-2.0 (github.com/gsumbul/SMARTIES, Hugging Face ``gsumbul/SMARTIES-v1-ViT-B`` / ``-ViT-L``).

Both layouts of its safetensors files load, with SMARTIES's own parameter names:

* downstream ViT (timm layout): ``cls_token``, ``pos_embed``,
  ``spectrum_projection.spectrum_embeds.{i}.proj.{weight,bias}`` (one linear ``p² → D`` per
  spectral range, in SMARTIES's projection-index order, :data:`~eo_fusion.models.spectral.
  SMARTIES_RANGES`), ``blocks.{j}.*``, ``norm.*`` (or ``fc_norm.*`` with global pooling) and an
  optional task ``head.*`` (dropped: the card lists no task for it);
* pretraining MAE: the same encoder plus ``decoder_embed``, ``decoder_blocks.{j}``,
  ``decoder_norm``, ``mask_token`` and ``decoder_preds.{i}`` (one pixel head per range).

Width, depth, MLP ratio, patch size and the stored grid are read from the tensors; heads are
``width / 64`` (the head width of every published size) and, for the MAE decoder, ``width / 32``
(512 wide × 16 heads in the published models). The imported encoder reproduces SMARTIES's
forward pass exactly: a token is ``12 ×`` the mean of its bands' projections (the projection
scaler), the class token is prepended, and positions are the ``pos_embed`` table stored in the
file. The model card carries SMARTIES's normalisation: a 1st/99th-percentile min-max clip, then
standardisation, with the statistics of its pretraining data, converted to eo-fusion's physical
units (S2 reflectance 0–1 = SMARTIES DN / 10000; S1 backscatter in dB; aerial 0–1 = DN / 255).

An imported MAE decoder can continue pretraining with :mod:`eo_fusion.models.mae`; it decodes the
patch tokens without SMARTIES's class token in the decoder sequence, so its reconstructions are
close to, not equal to, SMARTIES's (the encoder's tokens are equal).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

from eo_fusion.errors import CheckpointError
from eo_fusion.models.card import Architecture, BandNorm, InferenceSpec, ModelCard
from eo_fusion.models.checkpoint import LoadedModel, build, load_into
from eo_fusion.models.encoder import EncoderConfig, ViTSize
from eo_fusion.models.spectral import SMARTIES_RANGES

#: Attention head width of every published SMARTIES encoder (768/12, 1024/16).
HEAD_WIDTH = 64
#: Head width of the published SMARTIES MAE decoders (512 wide, 16 heads).
DECODER_HEAD_WIDTH = 32
#: SMARTIES multiplies the mean of the band projections by this factor.
PROJECTION_SCALER = 12.0

CITATION = (
    "G. Sumbul, C. Xu, E. Dalsasso, D. Tuia. SMARTIES: Spectrum-Aware Multi-Sensor Auto-Encoder "
    "for Remote Sensing Images. IEEE/CVF International Conference on Computer Vision (ICCV), "
    "2025. arXiv:2506.19585"
)
LICENSE = "Apache-2.0 (SMARTIES code and weights, github.com/gsumbul/SMARTIES)"

# Normalisation statistics of SMARTIES's pretraining data (its config/pretraining_sensors.yaml):
# per band (p1, p99) in the sensor's units, then (mean, std) of the clipped [0, 1] values.
_S2_L2A = {
    "s2:B01": (1.0, 2811.4529362270814, 0.11504939943552017, 0.14282256364822388),
    "s2:B02": (27.01892781481322, 2604.7705241174135, 0.1482059806585312, 0.14939884841442108),
    "s2:B03": (45.058626301104624, 2580.36014000968, 0.21661478281021118, 0.16681823134422302),
    "s2:B04": (12.495476066364853, 2829.486095366986, 0.198346346616745, 0.1924632489681244),
    "s2:B05": (5.990619300620652, 3138.512727440568, 0.2958453893661499, 0.19392383098602295),
    "s2:B06": (1.0, 4338.892460929282, 0.4101085066795349, 0.23844216763973236),
    "s2:B07": (1.0793969725828485, 5182.992628573339, 0.3985908329486847, 0.23693138360977173),
    "s2:B08": (1.0, 5529.262813718612, 0.399421751499176, 0.24099795520305634),
    "s2:B8A": (1.0, 5433.892460929279, 0.41560056805610657, 0.2424980103969574),
    "s2:B09": (1.0, 5170.23299517986, 0.43314507603645325, 0.2453242689371109),
    "s2:B11": (2.3175878903313945, 4418.1529202629945, 0.3597027063369751, 0.2402467578649521),
    "s2:B12": (4.277889404039971, 3387.4430439994744, 0.29588255286216736, 0.23555098474025726),
}
_S2_L1C = {
    "s2:B01": (37.64585208929401, 3080.510786577648, 0.4859526455402374, 0.12758658826351166),
    "s2:B02": (29.18559466264501, 3203.938417959125, 0.4051881730556488, 0.14896000921726227),
    "s2:B03": (24.274741671330318, 3293.076972690951, 0.37699365615844727, 0.17880381643772125),
    "s2:B04": (17.254247202424953, 3989.2347558003903, 0.3177563548088074, 0.21890224516391754),
    "s2:B05": (19.13979780847942, 4040.7721141423945, 0.34872591495513916, 0.2125963717699051),
    "s2:B06": (22.08922591601165, 4304.139607115774, 0.4299381673336029, 0.224585622549057),
    "s2:B07": (22.869959399856562, 4666.179477913532, 0.44645431637763977, 0.23589326441287994),
    "s2:B08": (19.210916774736788, 4529.406012196909, 0.4398050904273987, 0.23984773457050323),
    "s2:B8A": (20.55911232659136, 4884.792779577175, 0.4563218057155609, 0.2460414320230484),
    "s2:B09": (6.0325504256503395, 1864.980932724844, 0.3411673307418823, 0.2219637632369995),
    "s2:B10": (0.23132576070531397, 74.06991863107127, 0.2185993492603302, 0.14908181130886078),
    "s2:B11": (9.016896751152418, 4843.254056509721, 0.39822152256965637, 0.251782089471817),
    "s2:B12": (5.460257426649006, 4007.8071342823278, 0.3467017412185669, 0.2531779110431671),
}
_S1_GRD = {
    "s1:VV": (-29.519697483502714, -3.4569002179548702, 0.6493455171585083, 0.19030459225177765),
    "s1:VH": (-33.421480627395354, -9.905399040164635, 0.6035320162773132, 0.2288305163383484),
}
_RGB = {
    "aerial:red": (2.25423519463343, 254.8254785655767, 0.39974889159202576, 0.2723924219608307),
    "aerial:green": (
        0.8408760022210329,
        254.8135793768661,
        0.40887942910194397,
        0.26291385293006897,
    ),
    "aerial:blue": (0.2604600195558861, 254.85720973547197, 0.3851129412651062, 0.2712573707103729),
}


def _norms(table: Mapping[str, tuple[float, float, float, float]], unit: float) -> dict:
    """Statistics in eo-fusion physical units: percentiles divided by ``unit``."""
    return {
        k: BandNorm(mean=m, std=s, p1=p1 / unit, p99=p99 / unit)
        for k, (p1, p99, m, s) in table.items()
    }


#: The card's ``normalization`` of an imported SMARTIES model, per modality (L2A first: the
#: default for S2 bands when no modality is named).
SMARTIES_NORMALIZATION: dict[str, dict[str, BandNorm]] = {
    "s2-l2a": _norms(_S2_L2A, 1e4),
    "s2-l1c": _norms(_S2_L1C, 1e4),
    "s1-grd": _norms(_S1_GRD, 1.0),
    "aerial": _norms(_RGB, 255.0),
}

_PROJ = re.compile(r"^spectrum_projection\.spectrum_embeds\.(\d+)\.proj\.(weight|bias)$")
_PRED = re.compile(r"^decoder_preds\.(\d+)\.(weight|bias)$")
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(a), b)
    for a, b in (
        (r"^cls_token$", "encoder.cls_token"),
        (r"^pos_embed$", "encoder.pos_embed"),
        (r"^blocks\.(\d+)\.((?:norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(?:weight|bias))$",
         r"encoder.blocks.\1.\2"),
        (r"^(?:fc_)?norm\.(weight|bias)$", r"encoder.norm.\1"),
        (r"^decoder_embed\.(weight|bias)$", r"mae.decoder_embed.\1"),
        (r"^decoder_blocks\.(\d+)\.((?:norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(?:weight|bias))$",
         r"mae.decoder_blocks.\1.\2"),
        (r"^decoder_norm\.(weight|bias)$", r"mae.decoder_norm.\1"),
        (r"^mask_token$", "mae.mask_token"),
    )
)  # fmt: skip
#: Published parameters without a counterpart: a downstream task head (any ``head.*``), and the
#: decoder's fixed sin-cos table (recomputed for every grid; it equals SMARTIES's).
_DROPPED = re.compile(r"^(head\..+|decoder_pos_embed)$")


def _strip_prefix(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Remove a common wrapper prefix (``model.``, ``module.``, …) found before ``blocks.0``."""
    anchor = next((k for k in state if k.endswith("blocks.0.norm1.weight")), None)
    if anchor is None:
        raise CheckpointError(
            f"{source} holds no ViT blocks (no '*blocks.0.norm1.weight'): "
            "not a SMARTIES checkpoint",
            fix="pass a SMARTIES safetensors file (downstream ViT or pretraining MAE)",
        )
    prefix = anchor[: -len("blocks.0.norm1.weight")]
    if prefix.endswith("decoder_"):  # only a decoder: the encoder is missing
        raise CheckpointError(f"{source} has decoder blocks but no encoder blocks")
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def infer_config(state: Mapping[str, torch.Tensor], source: str = "state") -> EncoderConfig:
    """The encoder architecture of a (prefix-free) SMARTIES state dict, from tensor shapes."""
    try:
        dim = int(state["blocks.0.norm1.weight"].shape[0])
        hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
        pixels = int(state["spectrum_projection.spectrum_embeds.0.proj.weight"].shape[1])
        n_pos = int(state["pos_embed"].shape[1]) - int("cls_token" in state)
    except KeyError as e:
        raise CheckpointError(
            f"{source}: SMARTIES parameter {e} is missing",
            fix="pass a complete SMARTIES checkpoint (downstream ViT or pretraining MAE)",
        ) from e
    patch, grid = math.isqrt(pixels), math.isqrt(n_pos)
    if patch * patch != pixels or grid * grid != n_pos or dim % HEAD_WIDTH:
        raise CheckpointError(
            f"{source}: shapes do not fit a SMARTIES ViT (projection of {pixels} px, "
            f"{n_pos} positions, width {dim} not a multiple of {HEAD_WIDTH})"
        )
    n_proj = _count(state, _PROJ.pattern)
    if n_proj > len(SMARTIES_RANGES):
        raise CheckpointError(
            f"{source}: {n_proj} spectral projections, SMARTIES defines {len(SMARTIES_RANGES)}",
            fix="extend SMARTIES_RANGES in eo_fusion/models/spectral.py for this release",
        )
    dec_dim = int(state["decoder_embed.weight"].shape[0]) if "decoder_embed.weight" in state else 0
    dims = ViTSize(
        dim=dim,
        depth=_count(state, r"^blocks\.(\d+)\.norm1\.weight$"),
        heads=dim // HEAD_WIDTH,
        decoder_dim=dec_dim,
        decoder_depth=_count(state, r"^decoder_blocks\.(\d+)\.norm1\.weight$"),
        decoder_heads=max(1, dec_dim // DECODER_HEAD_WIDTH),
    )
    return EncoderConfig(
        size="custom",
        patch_size=patch,
        image_size=grid * patch,
        ranges=tuple(r.name for r in SMARTIES_RANGES[:n_proj]),
        mlp_ratio=hidden / dim,
        dims=dims,
        range_table="smarties",
        projection_scaler=PROJECTION_SCALER,
        cls_token="cls_token" in state,
        stored_pos_embed=True,
    )


def map_smarties_state(
    state: Mapping[str, torch.Tensor], cfg: EncoderConfig, source: str = "state"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a SMARTIES state dict to eo-fusion's; returns ``(mapped, names dropped)``.

    Linear projections ``(D, p²)`` become convolutions ``(D, 1, p, p)`` (the same row-major
    patch layout).

    Raises:
        CheckpointError: a parameter matches no rule (named in the message).
    """
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    p = cfg.patch_size
    for name, value in state.items():
        if m := _PROJ.match(name):
            rng = cfg.ranges[int(m.group(1))]
            v = value.reshape(value.shape[0], 1, p, p) if m.group(2) == "weight" else value
            out[f"encoder.embed.proj.{rng}.{m.group(2)}"] = v
        elif m := _PRED.match(name):
            out[f"mae.heads.{cfg.ranges[int(m.group(1))]}.{m.group(2)}"] = value
        elif _DROPPED.match(name):
            dropped.append(name)
        else:
            rule = next(((rx, to) for rx, to in _RULES if rx.match(name)), None)
            if rule is None:
                raise CheckpointError(
                    f"{source}: SMARTIES parameter '{name}' has no counterpart in eo-fusion",
                    fix="extend _RULES in eo_fusion/models/smarties.py for this layout",
                )
            out[rule[0].sub(rule[1], name)] = value
    return out, dropped


def from_smarties_state(
    state: Mapping[str, torch.Tensor], *, source: str = "state", name: str | None = None
) -> LoadedModel:
    """As :func:`import_smarties`, from an in-memory state dict."""
    state = _strip_prefix(state, source)
    cfg = infer_config(state, source)
    mapped, dropped = map_smarties_state(state, cfg, source)
    with_mae = any(k.startswith("mae.") for k in mapped)
    if with_mae and cfg.shape.decoder_depth == 0:
        raise CheckpointError(f"{source}: MAE parameters but no decoder blocks")
    s = cfg.shape
    card = ModelCard(
        name=name or f"smarties-{s.dim}x{s.depth}",
        architecture=Architecture(encoder=cfg, mae=with_mae),
        normalization=SMARTIES_NORMALIZATION,
        inference=InferenceSpec(window=cfg.image_size, stride=cfg.image_size // 2),
        training={"imported_from": "SMARTIES", "source": source, "dropped": dropped},
        license=LICENSE,
        citation=CITATION,
    )
    model = build(card)
    if with_mae:  # SMARTIES's pixel heads have no wavelength code: ours is switched off (zero)
        assert model.mae is not None
        for k, v in model.mae.state_dict().items():
            if k.startswith("code_proj."):
                mapped[f"mae.{k}"] = torch.zeros_like(v)
    load_into(model, mapped, source=source)
    for m in model.modules().values():
        m.eval()
    return model


def import_smarties(
    path: str | Path, *, name: str | None = None, cache_dir: str | Path | None = None
) -> LoadedModel:
    """Load a published SMARTIES checkpoint as a :class:`LoadedModel` (encoder, MAE if present).

    Args:
        path: a ``.safetensors`` file, a folder holding exactly one, or a Hugging Face model id
            ``hf://<owner>/<name>[@revision]`` (e.g. ``hf://gsumbul/SMARTIES-v1-ViT-B``),
            downloaded through ``huggingface_hub`` into its cache (``cache_dir``, else
            ``HF_HUB_CACHE``); with ``HF_HUB_OFFLINE=1`` only the cache is used.
        name: model name for the card (default ``smarties-<width>x<depth>``).

    Raises:
        CheckpointError: the file is missing or not a SMARTIES checkpoint, or the model cannot
            be fetched (offline and not cached): the message names it and the fix.
    """
    source = str(path)
    if source.startswith("hf://"):
        local = _from_hub(source.removeprefix("hf://"), cache_dir)
    else:
        local = Path(path)
    weights = _weights_file(local, source)
    try:
        state = load_file(weights)
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e})") from e
    return from_smarties_state(state, source=source, name=name)


def _weights_file(local: Path, source: str) -> Path:
    """The weights file itself, or the one file of a folder (a file named ``smarties*``, as
    SMARTIES names its releases, wins over others such as a transformers ``model.safetensors``)."""
    if local.is_file():
        return local
    if local.is_dir():
        files = sorted(local.glob("*.safetensors"))
        named = [f for f in files if f.name.lower().startswith("smarties")]
        if len(files) == 1 or len(named) == 1:
            return files[0] if len(files) == 1 else named[0]
        raise CheckpointError(
            f"{source}: folder {local} holds {len(files)} .safetensors files "
            f"({', '.join(f.name for f in files) or 'none'})",
            fix="pass the weights file itself",
        )
    raise CheckpointError(f"SMARTIES checkpoint {source} does not exist", fix="check the path")


def _from_hub(ref: str, cache_dir: str | Path | None) -> Path:
    """Download (or find in the cache) the safetensors files of a Hugging Face model repo."""
    repo, _, revision = ref.partition("@")
    if repo.count("/") != 1:
        raise CheckpointError(
            f"'hf://{ref}' is not a Hugging Face model id", fix="write hf://<owner>/<name>"
        )
    try:
        import huggingface_hub
    except ImportError as e:  # pragma: no cover - part of the ml extra
        raise CheckpointError(
            "loading hf:// models needs huggingface_hub", fix="pip install 'eo-fusion[ml]'"
        ) from e
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        # SMARTIES's release file (smarties-v1-vitb.safetensors) only, if the repo has one.
        for patterns in (["smarties*.safetensors"], ["*.safetensors"]):
            folder = huggingface_hub.snapshot_download(
                repo,
                revision=revision or None,
                cache_dir=cache_dir,
                allow_patterns=patterns,
                local_files_only=offline,
            )
            if any(Path(str(folder)).glob("*.safetensors")):
                break
    except Exception as e:  # network, auth, missing repo or missing cache entry
        how = (
            "HF_HUB_OFFLINE is set and the model is not in the cache"
            if offline
            else f"{type(e).__name__}: {e}"
        )
        raise CheckpointError(
            f"cannot fetch SMARTIES model hf://{ref} from Hugging Face ({how})",
            fix="connect to the internet once (the download is cached), or download the "
            ".safetensors file and pass its path",
        ) from e
    return Path(str(folder))
