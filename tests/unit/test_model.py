"""Encoder, MAE, heads, metrics and predict() on synthetic stacks in the ModalityStack layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from eo_fusion.errors import BadInputError, BandError
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.encoder import (
    EncoderConfig,
    SpectralViT,
    explicit_attention,
    feature_blocks,
    sincos_2d,
)
from eo_fusion.models.heads import CropModel, LandCoverModel
from eo_fusion.models.mae import MAE, norm_pix_loss, patch_loss, patchify, unpatchify
from eo_fusion.models.predict import predict
from eo_fusion.models.spectral import ALL_RANGES
from eo_fusion.train.metrics import confusion, scores

KEYS = ["s2:B02", "s2:B03", "s2:B04", "s2:B08"]


def _cfg(size="nano"):
    return EncoderConfig(size, 4, 32, ALL_RANGES)


def test_named_sizes_match_published_vit_shapes():
    base, large = _cfg("base").shape, _cfg("large").shape
    assert (base.dim, base.depth, base.heads) == (768, 12, 12)
    assert (large.dim, large.depth, large.heads) == (1024, 24, 16)
    assert (base.decoder_dim, base.decoder_depth) == (512, 8)


def test_positions_are_fixed_and_work_for_any_grid():
    enc = SpectralViT(_cfg()).eval()
    for hw in ((32, 32), (48, 64)):
        out, _ = enc(torch.randn(1, 4, *hw), KEYS)
        assert out.shape == (1, hw[0] // 4 * hw[1] // 4, 128)
    # Positions of a larger grid extend those of a smaller one (one unit per patch).
    small, big = sincos_2d(64, 4, 4), sincos_2d(64, 8, 8)
    assert torch.allclose(small[:4], big[:4])


def test_cpu_attention_equals_the_fused_kernel_with_and_without_key_padding():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 9, 8, generator=g)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[0, 3:] = True  # sample 0 keeps 3 keys; sample 1 all 9
    for padding in (None, pad):
        mask = None if padding is None else ~padding[:, None, None, :]
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.testing.assert_close(explicit_attention(q, k, v, padding), want)
    kept = explicit_attention(q[:1, :, :3], k[:1, :, :3], v[:1, :, :3])
    torch.testing.assert_close(explicit_attention(q, k, v, pad)[:1, :, :3], kept)


def test_patchify_round_trip():
    x = torch.randn(2, 3, 8, 12)
    assert torch.equal(unpatchify(patchify(x, 4), 4, 8, 12), x)


def test_norm_pix_loss_scores_only_masked_valid_pixels():
    pred = torch.zeros(1, 1, 2, 4)
    target = torch.tensor([[[[0.0, 1.0, 2.0, 3.0], [5.0, float("nan"), 1.0, 9.0]]]])
    only_first = norm_pix_loss(pred, target, torch.tensor([[1.0, 0.0]]))
    # A zero prediction against a standardised patch scores its (population) variance: 1.
    assert only_first.item() == pytest.approx(1.0, rel=1e-4)
    assert torch.isfinite(norm_pix_loss(pred, target, torch.tensor([[0.0, 1.0]])))


def test_mae_masks_three_quarters_and_mixes_half():
    torch.manual_seed(0)
    mae = MAE(SpectralViT(_cfg()))
    x, x2 = torch.randn(2, 4, 32, 32), torch.randn(2, 2, 32, 32)
    out = mae(x, KEYS, pair=(x2, ["s1:VV", "s1:VH"]))
    assert out.mask.sum(1).tolist() == [48, 48]  # 64 patches, 0.75 masked
    assert out.mixed.sum(1).tolist() == [32, 32]
    assert out.target_keys == [*KEYS, "s1:VV", "s1:VH"]
    assert out.pred.shape == (2, 6, 32, 32)
    out.loss.backward()
    assert mae.heads["sar_vv"].weight.grad is not None
    assert mae.encoder.embed.proj["sar_vh"].weight.grad.abs().sum() > 0


def test_patch_loss_normalises_all_bands_of_a_patch_together():
    pred = torch.zeros(1, 2, 2, 4)
    target = torch.tensor([[[[0.0, 1, 2, 3], [9, 9, 9, 9]], [[4.0, 5, 6, 7], [1, 2, 3, 4]]]])
    # Patch 0, both bands jointly: mean 3.5, unbiased variance 6 -> zero prediction scores 7/8.
    total, count = patch_loss(pred, target, torch.tensor([[1.0, 0.0]]), "patch")
    assert (total.item(), count.item()) == (pytest.approx(7 / 8, rel=1e-4), 1.0)
    # Each band on its own (population variance): exactly 1.
    total, _ = patch_loss(pred, target, torch.tensor([[1.0, 0.0]]), "patch_band")
    assert total.item() == pytest.approx(1.0, rel=1e-4)
    # Raw targets, a NaN pixel ignored; a patch's loss is the mean over its valid values.
    target[0, 0, 1, 0] = float("nan")
    total, count = patch_loss(pred, target, torch.tensor([[0.0, 1.0]]), "band")
    expected = (3 * 81 + 1 + 4 + 9 + 16) / 7
    assert (total.item(), count.item()) == (pytest.approx(expected), 1.0)


def test_mae_pairs_are_two_complementary_sequences_with_one_mask(monkeypatch):
    torch.manual_seed(0)
    mae = MAE(SpectralViT(_cfg()))
    x, x2 = torch.randn(2, 4, 32, 32), torch.randn(2, 2, 32, 32)
    seen = []
    inner = mae._encode_decode
    monkeypatch.setattr(
        mae, "_encode_decode", lambda tok, shuffle, keep, hw, miss: seen.append((tok, shuffle)) or
        inner(tok, shuffle, keep, hw, miss)
    )  # fmt: skip
    out = mae(x, KEYS, pair=(x2, ["s1:VV", "s1:VH"]), mixup="pairs")
    (t1, s1), (t2, s2) = seen
    assert torch.equal(s1, s2)  # one shared mask
    ta, tb = mae.encoder.tokens(x, KEYS), mae.encoder.tokens(x2, ["s1:VV", "s1:VH"])
    m = out.mixed.bool()[..., None]
    assert out.mixed.sum(1).tolist() == [32, 32]
    assert torch.allclose(t1, torch.where(m, tb, ta)) and torch.allclose(t2, torch.where(m, ta, tb))
    out.loss.backward()
    assert mae.heads["sar_vv"].weight.grad.abs().sum() > 0
    # The single-sequence variant runs one sequence against both images' bands.
    seen.clear()
    mae(x, KEYS, pair=(x2, ["s1:VV", "s1:VH"]), mixup="swap", target_norm="band")
    assert len(seen) == 1


def test_crop_model_ignores_missing_dates():
    torch.manual_seed(0)
    net = CropModel(SpectralViT(_cfg()), 3, feature_blocks(4), 16).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    doy = torch.tensor([[100.0, 150.0, 200.0]])
    x_missing = x.clone()
    x_missing[:, 1] = float("nan")
    with torch.inference_mode():
        with_gap = net(x_missing, KEYS, doy)
        without = net(x[:, [0, 2]], KEYS, doy[:, [0, 2]])
    assert (with_gap - without).abs().max() < 1e-4


def test_metrics_from_a_hand_counted_confusion():
    truth = np.array([0, 0, 1, 1, 2, 2, 2, 9])
    pred = np.array([0, 1, 1, 1, 2, 0, 2, 2])
    cm = confusion(truth, pred, 3)
    assert cm.sum() == 7  # the 9 is out of range
    s = scores(cm, ["a", "b", "c"])
    assert s["oa"] == pytest.approx(5 / 7)
    # IoU a: tp 1 / (2 + 2 - 1); b: 2 / (2 + 3 - 2); c: 2 / (3 + 2 - 2)
    assert s["per_class"]["a"]["iou"] == pytest.approx(1 / 3)
    assert s["miou"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert s["per_class"]["b"]["f1"] == pytest.approx(2 * 2 / (2 + 3))


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = _cfg()
    take = feature_blocks(4)
    card = {
        "name": "synthetic",
        "architecture": {
            "encoder": cfg.to_dict(),
            "landcover": {"n_classes": 3, "take": list(take), "channels": 16},
            "crops": {"n_classes": 3, "take": list(take), "channels": 16},
        },
        "tasks": {
            t: {
                "inputs": {
                    "s2-l2a": KEYS,
                    **({"dem": ["elevation:dem"]} if t == "landcover" else {}),
                },
                "optional": ["dem"],
                "mode": mode,
                "classes": [{"id": i + 1, "name": f"c{i}", "color": "#000000"} for i in range(3)],
            }
            for t, mode in (("landcover", "composite"), ("crops", "timeseries"))
        },
        "normalization": {
            "s2-l2a": {k: [0.1, 0.05] for k in KEYS},
            "dem": {"elevation:dem": [300, 50]},
        },
        "inference": {"window": 32},
    }
    enc = SpectralViT(cfg)
    m = ck.LoadedModel(
        card=card,
        encoder=enc,
        landcover=LandCoverModel(SpectralViT(cfg), 3, take, 16),
        crops=CropModel(SpectralViT(cfg), 3, take, 16),
    )
    for mod in m.modules().values():
        mod.eval()
    return m


@pytest.fixture(scope="module")
def model():
    return _model()


def _stack(h=48, w=56, seed=0, times=None):
    rng = np.random.default_rng(seed)
    ys = 5_000_000 - 10 * np.arange(h) - 5
    xs = 400_000 + 10 * np.arange(w) + 5
    if times is None:
        s2 = (rng.random((4, h, w)) * 0.3).astype("float32")
        dims = ("s2-l2a:band", "y", "x")
        coords = {"s2-l2a:band": KEYS}
    else:
        s2 = (rng.random((len(times), 4, h, w)) * 0.3).astype("float32")
        dims = ("s2-l2a:time", "s2-l2a:band", "y", "x")
        coords = {"s2-l2a:band": KEYS, "s2-l2a:time": pd.to_datetime(times).values}
    ds = xr.Dataset(
        {
            "s2-l2a": (dims, s2),
            "dem": (("dem:band", "y", "x"), (300 + rng.random((1, h, w)) * 20).astype("float32")),
        },
        coords={**coords, "dem:band": ["elevation:dem"], "y": ys, "x": xs},
    )
    ds["s2-l2a"] = ds["s2-l2a"].assign_coords(coords)
    return ds


def test_predict_returns_probabilities_on_the_stack_grid(model):
    m = model
    st = _stack()
    p = predict(st, m)
    assert p.dims == ("class", "y", "x")
    assert p.dtype == np.float32
    assert np.array_equal(p["x"], st["x"]) and np.array_equal(p["y"], st["y"])
    assert np.allclose(p.sum("class"), 1, atol=1e-5)
    assert p["class"].values.tolist() == [1, 2, 3]


def test_predict_is_independent_of_tile_size_away_from_edges(model):
    m = model
    st = _stack(88, 88)
    whole = predict(st, m, batch_size=32)
    tile = predict(st.isel(y=slice(17, 88), x=slice(5, 80)), m, batch_size=32)
    inner = dict(y=slice(31 + 17, 88 - 31), x=slice(31 + 5, 80 - 31))
    a = whole.sel(y=whole["y"][inner["y"]], x=whole["x"][inner["x"]])
    b = tile.sel(y=a["y"], x=a["x"])
    assert a.size > 0
    assert float(abs(a - b).max()) < 1e-5


def test_predict_band_order_and_missing_bands(model):
    m = model
    st = _stack(40, 40)
    ref = predict(st, m)
    shuffled = st.isel({"s2-l2a:band": [2, 0, 3, 1]})
    assert float(abs(predict(shuffled, m) - ref).max()) < 1e-5
    fewer = predict(st.isel({"s2-l2a:band": [0, 1, 2]}), m)
    assert np.isfinite(fewer).all()
    without_dem = predict(st.drop_vars("dem"), m)
    assert np.isfinite(without_dem).all()


def test_predict_refuses_unknown_bands_and_marks_nodata(model):
    m = model
    st = _stack(40, 40)
    with pytest.raises(BandError, match="s1:HH"):
        predict(st, m, bands=["s2:B02", "s1:HH"])
    st["s2-l2a"][:, :5, :5] = np.nan
    st["dem"][:, :5, :5] = np.nan
    p = predict(st, m)
    assert np.isnan(p[:, :5, :5]).all()
    assert np.isfinite(p[:, 5:, 5:]).all()
    with pytest.raises(BadInputError, match="s2-l2a"):
        predict(st.drop_vars("s2-l2a"), m)


def test_predict_time_series_task(model):
    m = model
    st = _stack(40, 40, times=["2020-04-01", "2020-06-01", "2020-08-01"])
    p = predict(st, m, task="crops")
    assert p.shape == (3, 40, 40)
    assert np.allclose(p.sum("class"), 1, atol=1e-5)
    with pytest.raises(BadInputError, match="time series"):
        predict(_stack(40, 40), m, task="crops")


def test_embed_returns_the_last_block_before_the_final_norm():
    from eo_fusion.models import embed

    m = ck.load()  # the bundled model: no class token, so (B, N, D)
    x = np.random.default_rng(0).normal(size=(2, 4, 32, 32)).astype("float32")
    out = embed(m, x, KEYS, normalized=True)
    with torch.inference_mode():
        tok = m.encoder.tokens(torch.from_numpy(x), KEYS)
        for blk in m.encoder.blocks:
            tok = blk(tok)
    assert out.shape == (2, 64, 128)
    assert np.abs(out - tok.numpy()).max() < 1e-5
    # Physical units go through the card's statistics (here mean/std per band of s2-l1c).
    phys = np.full((1, 4, 32, 32), 0.1, dtype="float32")
    norms = [m.card.band_norm("s2-l1c", k) for k in KEYS]
    manual = np.stack([(0.1 - n.mean) / n.std * np.ones((32, 32)) for n in norms])[None]
    a = embed(m, phys, KEYS, modality="s2-l1c")
    b = embed(m, manual.astype("float32"), KEYS, normalized=True)
    assert np.abs(a - b).max() < 1e-4


def test_pretraining_with_the_smarties_defaults_runs_and_stores_percentile_statistics(tmp_path):
    from eo_fusion.models.config import PretrainSpec
    from eo_fusion.train.data import Scene
    from eo_fusion.train.pretrain import percentile_stats, pretrain

    rng = np.random.default_rng(0)
    s2 = np.linspace(0, 0.99, 100, dtype="float32")[None, None, :].repeat(4, 0).repeat(40, 1)
    s2 = s2 + rng.normal(0, 0.01, s2.shape).astype("float32")
    s1 = rng.uniform(-25, -5, (2, 40, 100)).astype("float32")
    scene = Scene(
        "synthetic", {"s2-l2a": s2, "s1-grd": s1}, {"s2-l2a": KEYS, "s1-grd": ["s1:VV", "s1:VH"]}
    )
    stats, by_kind = percentile_stats([scene])
    b04 = stats["s2-l2a"]["s2:B04"]
    v = s2[2].ravel()
    assert (b04.p1, b04.p99) == pytest.approx(tuple(np.percentile(v, [1, 99])), rel=1e-5)
    assert b04.mean == pytest.approx(0.5, abs=0.02) and by_kind["sar"].p1 is not None
    spec = PretrainSpec.model_validate(
        {"name": "t", "data": {"zarr": ["unused.zarr"]}, "out": str(tmp_path), "steps": 3,
         "batch_size": 2, "image_size": 16, "warmup_steps": 1, "band_dropout": 0.0}
    )  # fmt: skip
    assert (spec.target_norm, spec.normalization, spec.mixup, spec.mixup_prob) == (
        "patch", "percentile", "pairs", 1.0
    )  # fmt: skip
    model = pretrain(spec, [scene], progress=False)
    assert model.card.normalization["s2-l2a"]["s2:B04"] == b04
    back = ck.load(tmp_path / "model")
    assert back.card.normalization == model.card.normalization
    losses = [float(r.split(",")[1]) for r in (tmp_path / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == 3 and all(np.isfinite(losses))
