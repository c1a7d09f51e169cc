"""Missing data in our own encoder: masked tokens, per-modality dates, modality dropout, late
fusion (issue 13, deliverable 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from eo_fusion.models import checkpoint as ck
from eo_fusion.models.encoder import EncoderConfig, SpectralViT, feature_blocks
from eo_fusion.models.heads import CropModel, LandCoverModel, union_dates
from eo_fusion.models.predict import predict, select_inputs
from eo_fusion.models.spectral import ALL_RANGES
from eo_fusion.train.finetune import drop_modalities

S2 = ["s2:B02", "s2:B03", "s2:B04", "s2:B08"]
S1 = ["s1:VV", "s1:VH"]
DEM = ["elevation:dem"]


def _enc(seed: int = 0) -> SpectralViT:
    torch.manual_seed(seed)
    return SpectralViT(EncoderConfig("nano", 4, 32, ALL_RANGES)).eval()


def _x(seed: int = 0, c: int = 4, hw: int = 32) -> torch.Tensor:
    return torch.randn(1, c, hw, hw, generator=torch.Generator().manual_seed(seed))


def test_values_under_a_mask_never_reach_any_output():
    enc = _enc()
    x = _x()
    valid = torch.ones_like(x, dtype=torch.bool)
    valid[:, :, 8:16, 4:12] = False  # two whole patches (rows 2-3, cols 1-2) ...
    valid[:, 1, 20:22, 20:24] = False  # ... and half of one band of another patch
    other = x.clone()
    other[~valid] = 1e6 * torch.randn(int((~valid).sum()))
    with torch.inference_mode():
        a, fa = enc(x, S2, (1, 3), valid=valid)
        b, fb = enc(other, S2, (1, 3), valid=valid)
        nan = x.masked_fill(~valid, float("nan"))
        c, _ = enc(nan, S2, (1, 3))  # NaN marks the same pixels as the mask
    assert torch.equal(a, b) and all(torch.equal(p, q) for p, q in zip(fa, fb, strict=True))
    assert torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_a_fully_masked_patch_is_left_out_of_attention():
    """The other tokens' outputs equal those of the sequence without the masked patches."""
    enc = _enc()
    x = _x()
    x[:, :, 0:8, 8:16] = float("nan")  # patches 2 and 3 of row 0, 10 and 11 of row 1
    with torch.inference_mode():
        tok, missing = enc.masked_tokens(x, S2)
        out, _ = enc.run_blocks(tok, (), missing)
        keep = ~missing[0]
        alone, _ = enc.run_blocks(tok[:, keep])
        noisy = tok.clone()
        noisy[missing] = 50 * torch.randn(int(missing.sum()), tok.shape[-1])
        out_noisy, _ = enc.run_blocks(noisy, (), missing)
    assert missing[0].nonzero().flatten().tolist() == [2, 3, 10, 11]
    assert torch.equal(tok[missing], enc.positions(8, 8)[missing[0]])  # token 0 + position
    assert (out[:, keep] - alone).abs().max() < 1e-5
    assert torch.equal(out[:, keep], out_noisy[:, keep])
    assert torch.isfinite(out).all()


def test_a_window_without_any_data_gives_finite_outputs():
    enc = _enc()
    x = torch.full((2, 4, 32, 32), float("nan"))
    x[1] = _x(1)[0]
    net = LandCoverModel(enc, 3, feature_blocks(4), 16).eval()
    with torch.inference_mode():
        tok, _ = enc(x, S2)
        logits = net(x, S2)
    assert torch.isfinite(tok).all() and torch.isfinite(logits).all()


def test_partial_patch_projects_valid_pixels_and_present_bands_only():
    enc = _enc()
    emb = enc.embed
    x = _x(2, hw=4)  # one patch
    # A band absent from the patch is left out of the token mean (not averaged in as zeros).
    gone = x.clone()
    gone[:, 3] = float("nan")
    assert (emb(gone, S2) - emb(x[:, :3], S2[:3])).abs().max() < 1e-5
    # Missing pixels of a band take the mean of its valid pixels; the band is weighted by its
    # valid share of the patch (here 1/2 for band 0, 1 for the others).
    part = x.clone()
    part[:, 0, :2] = float("nan")
    filled = x.clone()
    filled[:, 0, :2] = x[:, 0, 2:].mean()
    w, b = emb.band_projections(S2)
    per = torch.einsum("dcij,cij->cd", w, filled[0]) + b  # (C, D) per-band projections
    share = torch.tensor([0.5, 1.0, 1.0, 1.0])[:, None]
    expect = (per * share).sum(0) / share.sum()
    assert (emb(part, S2)[0, 0] - expect).abs().max() < 1e-5
    # With every pixel valid, the masked path equals the one-convolution path.
    ok = torch.isfinite(x)
    slow, _ = emb._masked_tokens(x, ok, S2)
    assert (slow - emb(x, S2)).abs().max() < 1e-5


def test_mae_runs_with_cloudy_inputs():
    from eo_fusion.models.mae import MAE

    torch.manual_seed(0)
    mae = MAE(SpectralViT(EncoderConfig("nano", 4, 32, ALL_RANGES)))
    x = torch.randn(2, 4, 32, 32)
    x[0, :, :16] = float("nan")
    out = mae(x, S2, pair=(torch.randn(2, 2, 32, 32), S1))
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_late_fusion_means_the_sensors_that_have_data():
    enc = _enc()
    x = torch.cat([_x(3), _x(4, c=1)], dim=1)
    keys = S2 + DEM
    net = LandCoverModel(enc, 3, feature_blocks(4), 16, fusion="late_mean").eval()
    with torch.inference_mode():
        both = net.features(x, keys)
        s2_alone = net.features(x[:, :4], S2)
        no_dem = x.clone()
        no_dem[:, 4] = float("nan")
        masked = net.features(no_dem, keys)
        dem_only = net.features(x[:, 4:], DEM)
    assert all(torch.equal(a, b) for a, b in zip(masked, s2_alone, strict=True))
    mean = [(a + b) / 2 for a, b in zip(s2_alone, dem_only, strict=True)]
    assert all((a - b).abs().max() < 1e-5 for a, b in zip(both, mean, strict=True))
    cat = LandCoverModel(enc, 3, feature_blocks(4), 16, fusion="late_concat",
                         groups=("s2", "elevation")).eval()  # fmt: skip
    with torch.inference_mode():
        f = cat.features(x[:, :4], S2)
        assert f[0].shape[-1] == 2 * enc.dim
        assert not f[0][..., enc.dim :].any()  # the absent elevation group contributes 0
        assert torch.isfinite(cat(x, keys)).all()


def test_modality_dropout_never_drops_every_modality():
    rng = np.random.default_rng(0)
    x = np.ones((5, 4, 4), dtype="float32")
    groups = [(0, 1, 2), (3, 4)]
    dropped = []
    for _ in range(400):
        out = drop_modalities(x, groups, 0.5, rng)
        gone = [bool(np.isnan(out[list(g)]).all()) for g in groups]
        assert not all(gone)
        assert all(np.isnan(out[list(g)]).all() or (out[list(g)] == 1).all() for g in groups)
        dropped.append(gone)
    share = np.mean(dropped, axis=0)
    assert np.all((share > 0.25) & (share < 0.5))  # 0.5 × (1 - 0.5/2) = 0.375 expected
    assert drop_modalities(x, groups, 0.0, rng) is x
    assert drop_modalities(x, groups[:1], 0.9, rng) is x


def test_union_dates_keeps_each_modalitys_own_dates():
    s2 = np.ones((3, 4, 2, 2), dtype="float32")
    s1 = 2 * np.ones((5, 2, 2, 2), dtype="float32")
    t2 = pd.to_datetime(["2020-05-03", "2020-06-12", "2020-07-02"]).values
    t1 = pd.to_datetime(["2020-05-01", "2020-05-13", "2020-05-25", "2020-06-06", "2020-07-02"])
    arr, times = union_dates([(s2, t2), (s1, t1.values)])
    assert arr.shape == (8, 6, 2, 2)
    assert list(pd.DatetimeIndex(times).strftime("%m-%d")) == [
        "05-01", "05-03", "05-13", "05-25", "06-06", "06-12", "07-02", "07-02"
    ]  # fmt: skip
    s2_rows = np.isfinite(arr[:, 0, 0, 0])
    assert s2_rows.tolist() == [False, True, False, False, False, True, True, False]
    assert np.isnan(arr[s2_rows, 4:]).all() and np.isnan(arr[~s2_rows, :4]).all()
    assert (arr[~s2_rows, 4:] == 2).all()


def _series_model() -> ck.LoadedModel:
    cfg = EncoderConfig("nano", 4, 32, ALL_RANGES)
    torch.manual_seed(0)
    take = feature_blocks(4)
    card = {
        "name": "synthetic-fusion",
        "architecture": {
            "encoder": cfg.to_dict(),
            "crops": {"n_classes": 3, "take": list(take), "channels": 16},
            "landcover": {"n_classes": 3, "take": list(take), "channels": 16},
        },
        "tasks": {
            t: {
                "inputs": {"s2-l2a": S2, "s1-grd": S1},
                "optional": ["s1-grd"],
                "mode": mode,
                "classes": [{"id": i + 1, "name": f"c{i}", "color": "#000000"} for i in range(3)],
            }
            for t, mode in (("crops", "timeseries"), ("landcover", "composite"))
        },
        "normalization": {
            "s2-l2a": {k: [0.1, 0.05] for k in S2},
            "s1-grd": {k: [-12.0, 4.0] for k in S1},
        },
        "inference": {"window": 32},
    }
    m = ck.build(card)
    for mod in m.modules().values():
        mod.eval()
    return m


def _grid(h: int, w: int) -> dict[str, np.ndarray]:
    return {"y": 5_000_000 - 10 * np.arange(h) - 5.0, "x": 400_000 + 10 * np.arange(w) + 5.0}


def _series_stack(h: int = 40, w: int = 40, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    t2 = pd.to_datetime(["2020-05-03", "2020-06-12", "2020-07-02"]).values
    t1 = pd.to_datetime(["2020-05-01", "2020-05-13", "2020-05-25", "2020-06-06", "2020-06-18"])
    s2 = (rng.random((3, 4, h, w)) * 0.3).astype("float32")
    s1 = (-12 + 4 * rng.standard_normal((5, 2, h, w))).astype("float32")
    valid = np.ones((3, h, w), dtype=bool)
    valid[1, 8:24, 8:24] = False  # a cloud on the second S2 date
    return xr.Dataset(
        {
            "s2-l2a": (("s2-l2a:time", "s2-l2a:band", "y", "x"), s2),
            "s2-l2a:valid": (("s2-l2a:time", "y", "x"), valid),
            "s1-grd": (("s1-grd:time", "s1-grd:band", "y", "x"), s1),
        },
        coords={
            "s2-l2a:time": t2,
            "s2-l2a:band": S2,
            "s1-grd:time": t1.values,
            "s1-grd:band": S1,
            **_grid(h, w),
        },
    )


def test_predict_s1_and_s2_series_with_different_dates():
    m = _series_model()
    st = _series_stack()
    arr, keys, time = select_inputs(st, m.card, "crops")
    assert arr.shape[:2] == (8, 6) and keys == S2 + S1 and len(time) == 8
    # The cloud flagged by the stack's valid mask reaches the model as missing pixels.
    cloudy = pd.DatetimeIndex(time).get_loc(pd.Timestamp("2020-06-12"))
    assert np.isnan(arr[cloudy, :4, 8:24, 8:24]).all() and np.isfinite(arr[cloudy, :4, :8]).all()
    p = predict(st, m, task="crops")
    assert p.shape == (3, 40, 40) and np.allclose(p.sum("class"), 1, atol=1e-5)
    # Values under the cloud do not matter.
    other = st.copy(deep=True)
    other["s2-l2a"][1, :, 8:24, 8:24] = 1e4
    assert float(abs(predict(other, m, task="crops") - p).max()) == 0.0


def test_crop_model_ignores_a_modality_without_data():
    """Rows of a modality with no valid pixel change nothing: S2 + an empty S1 = S2 alone."""
    m = _series_model()
    x2 = torch.randn(1, 3, 4, 32, 32)
    doy2 = torch.tensor([[120.0, 160.0, 190.0]])
    x1 = torch.full((1, 4, 2, 32, 32), float("nan"))
    union = torch.cat(
        [torch.cat([x2, torch.full((1, 3, 2, 32, 32), float("nan"))], 2),
         torch.cat([torch.full((1, 4, 4, 32, 32), float("nan")), x1], 2)], 1
    )  # fmt: skip
    doy = torch.cat([doy2, torch.tensor([[100.0, 130.0, 170.0, 200.0]])], 1)
    net: CropModel = m.crops
    with torch.inference_mode():
        alone = net(x2, S2, doy2)
        both = net(union, S2 + S1, doy)
    assert (alone - both).abs().max() < 1e-4


def test_predict_marks_fully_masked_pixels_as_nodata():
    m = _series_model()
    h = w = 40
    rng = np.random.default_rng(1)
    s2 = (rng.random((4, h, w)) * 0.3).astype("float32")
    valid = np.ones((h, w), dtype=bool)
    valid[12:20, 16:24] = False  # two whole 4 px patches of every window, all bands
    st = xr.Dataset(
        {"s2-l2a": (("s2-l2a:band", "y", "x"), s2), "s2-l2a:valid": (("y", "x"), valid)},
        coords={"s2-l2a:band": S2, **_grid(h, w)},
    )
    p = predict(st, m).values
    assert np.isnan(p[:, ~valid]).all() and np.isfinite(p[:, valid]).all()
    other = st.copy(deep=True)
    other["s2-l2a"][:, 12:20, 16:24] = -5.0
    q = predict(other, m).values
    assert np.array_equal(np.isnan(p), np.isnan(q))
    assert np.nanmax(np.abs(p - q)) == 0.0


@pytest.mark.parametrize("fusion", ["early", "late_mean", "late_concat"])
def test_finetune_with_dropout_and_fusion_round_trips(tmp_path, fusion):
    from eo_fusion.models.config import FinetuneSpec
    from eo_fusion.train.data import Scene
    from eo_fusion.train.finetune import finetune

    rng = np.random.default_rng(0)
    s2 = (rng.random((4, 40, 40)) * 0.3).astype("float32")
    s2[:, :6, :6] = np.nan
    dem = (300 + rng.random((1, 40, 40)) * 20).astype("float32")
    sc = Scene("syn", {"s2-l2a": s2, "dem": dem}, {"s2-l2a": S2, "dem": DEM},
               labels=rng.integers(1, 4, (40, 40)))  # fmt: skip
    spec = FinetuneSpec.model_validate(
        {"name": "t", "data": {"zarr": ["x"]}, "inputs": {"s2-l2a": S2, "dem": DEM},
         "steps": 2, "batch_size": 2, "modality_dropout": 0.5, "fusion": fusion}
    )  # fmt: skip
    model = finetune(spec, [sc], None, progress=False)
    assert model.card.architecture.landcover.fusion == fusion
    back = ck.load(ck.save(model, tmp_path / "m"))
    x = torch.from_numpy(np.concatenate([s2, dem])[None, :, :32, :32])
    with torch.inference_mode():
        a = model.landcover.eval()(x, S2 + DEM)
        b = back.landcover.eval()(x, S2 + DEM)
    assert torch.isfinite(a).all() and torch.equal(a, b)
    with pytest.raises(ValueError, match="fusion"):
        FinetuneSpec.model_validate(spec.model_dump() | {"task": "crops", "fusion": "late_mean"})
