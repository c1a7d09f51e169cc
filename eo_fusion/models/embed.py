"""Token embeddings of an image: the encoder's output for any band subset, in any order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from eo_fusion.errors import BadInputError, BandError
from eo_fusion.models.card import normalize_bands
from eo_fusion.models.checkpoint import LoadedModel


def embed(
    model: LoadedModel,
    x: np.ndarray | torch.Tensor,
    bands: Sequence[str],
    *,
    normalized: bool = False,
    modality: str | None = None,
) -> np.ndarray:
    """Tokens of the last encoder block, before the final norm, ``(B, n_prefix + N, D)``.

    Args:
        model: a loaded model (e.g. :func:`eo_fusion.models.import_smarties`).
        x: float32 ``(B, C, H, W)``; ``H`` and ``W`` multiples of the patch size. NaN marks a
            missing pixel: it is never read (a patch's token averages its valid pixels and
            bands) and a patch with no valid pixel is left out of attention as a key (its own
            output token is still returned, finite).
        bands: the registry key of each channel (``s2:B04``, ``s1:VV``, …), in any order: each
            channel goes to the projection of its own band.
        normalized: ``x`` is already normalised; otherwise it holds physical units (S2
            reflectance 0–1, S1 backscatter in dB, …) and the card's normalisation is applied.
        modality: whose statistics to use for a band listed under several modalities
            (e.g. ``s2-l1c``); default: the first modality of the card that has the band.

    Returns:
        float32 tokens, the class token first where the model has one, then the patch tokens in
        row-major order. For an imported SMARTIES model these are the tokens of SMARTIES's own
        all-tokens forward pass.

    Raises:
        BadInputError: wrong shape, dtype or infinite values (named).
        BandError: a band the model cannot embed or has no statistics for (named).
    """
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 4 or arr.dtype != np.float32:
        raise BadInputError(
            f"embed() needs a float32 array (B, C, H, W), got {arr.dtype} of shape {arr.shape}",
            fix="pass x.astype('float32') with a batch axis first",
        )
    if arr.shape[1] != len(bands):
        raise BandError(
            f"x has {arr.shape[1]} channels but {len(bands)} band keys were given",
            fix="pass one registry key per channel, in the channels' order",
        )
    bad = int(np.isinf(arr).sum())
    if bad:
        raise BadInputError(
            f"x holds {bad} infinite values",
            fix="mark missing pixels as NaN (they are masked) or clip the values",
        )
    enc = model.encoder
    enc.embed.assignments(bands)  # unknown / duplicate keys fail here, by name
    if not normalized:
        arr = normalize_bands(arr, [model.card.band_norm(modality, k) for k in bands], axis=1)
    was_training = enc.training
    enc.eval()
    with torch.inference_mode():
        tok = enc.all_tokens(torch.from_numpy(np.ascontiguousarray(arr)), list(bands))
    enc.train(was_training)
    return tok.numpy()
