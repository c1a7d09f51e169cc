"""Prediction on any hardware: device and precision resolution, window/overlap blending,
``torch.compile`` against eager, and the map job's model options (CLI, provenance)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import xarray as xr

from eo_fusion import devices
from eo_fusion.cli import main
from eo_fusion.config import ModelRef
from eo_fusion.errors import BadInputError, ConfigError
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.predict import InferenceOptions, _ramp, predict, window_settings
from eo_fusion.pipeline.predictors import ModelPredictor


@pytest.fixture(scope="module")
def bundled():
    return ck.load()


def _stack(card, size: int, seed: int = 0) -> xr.Dataset:
    """A tile with the card's land-cover inputs, values ~ N(mean, std) per band, on UTM 33N."""
    rng = np.random.default_rng(seed)
    variables, coords = {}, {}
    for mod, keys in card.task("landcover").inputs.items():
        norms = [card.band_norm(mod, k) for k in keys]
        data = np.stack([rng.normal(n.mean, n.std, (size, size)) for n in norms])
        variables[mod] = ((f"{mod}:band", "y", "x"), data.astype("float32"))
        coords[f"{mod}:band"] = keys
    coords["y"] = 5_080_000 - 10 * np.arange(size) - 5.0
    coords["x"] = 465_000 + 10 * np.arange(size) + 5.0
    return xr.Dataset(variables, coords=coords)


def _no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


def test_auto_device_is_cuda_when_present_and_each_rank_takes_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device("auto", local_rank=3) == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")
    _no_gpu(monkeypatch)
    assert devices.resolve_device("auto") == torch.device("cpu")


def test_absent_device_is_an_error_naming_the_option(monkeypatch):
    _no_gpu(monkeypatch)
    with pytest.raises(BadInputError, match=r"model\.device 'cuda' was asked for") as e:
        InferenceOptions(device="cuda", option="model.").resolve()
    assert e.value.exit_code == 2 and "model.device: auto or cpu" in str(e.value)
    with pytest.raises(BadInputError, match=r"model\.device 'mps'"):
        InferenceOptions(device="mps", option="model.").resolve()
    with pytest.raises(BadInputError, match=r"model\.precision: precision fp16 .* CPU"):
        InferenceOptions(device="cpu", precision="fp16", option="model.").resolve()


def test_auto_precision_per_device(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.inference_dtype(cpu, "auto") == torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.inference_dtype(cpu, "auto") is None  # emulated bf16 is slower than fp32
    assert devices.inference_dtype(cpu, "bf16") == torch.bfloat16  # may still be forced
    assert devices.inference_dtype(cpu, "fp32") is None
    # Training keeps fp32 as its CPU default.
    assert devices.autocast_dtype(cpu, "auto") is None
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert devices.inference_dtype(gpu, "auto") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert devices.inference_dtype(gpu, "auto") == torch.float16
    assert devices.inference_dtype(torch.device("mps"), "auto") == torch.float16
    assert devices.precision_name(torch.bfloat16) == "bf16"
    assert devices.precision_name(None) == "fp32"


def test_native_bf16_is_read_from_the_cpu_flags():
    with open("/proc/cpuinfo") as f:
        flags = next((ln for ln in f if ln.startswith("flags")), "")
    assert devices.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_ramp_is_the_tent_at_half_overlap_and_cross_fades_otherwise():
    i = np.arange(32, dtype="float32")
    tent = np.minimum(i + 0.5, 32 - i - 0.5) / 16
    np.testing.assert_array_equal(_ramp(32, 16), np.outer(tent, tent))
    w = _ramp(64, 16)[32]  # a middle row: ramps over 16 px, flat in the middle
    assert w[0] == pytest.approx(w[32] * 0.5 / 16) and w[16:48].max() == w[16:48].min()
    # Two neighbours at stride 48 sum to a constant over the shared 16 px.
    row = w / w.max()
    np.testing.assert_allclose(row[48:] + row[:16], 1.0, atol=1e-6)
    assert (_ramp(32, 0) == 1).all()


def test_window_settings_default_to_the_card_and_refuse_bad_values(bundled):
    card = bundled.card
    assert window_settings(card) == (32, 8)  # card: window 32, stride 24
    assert window_settings(card, 64) == (64, 32)
    assert window_settings(card, 64, 16) == (64, 16)
    with pytest.raises(BadInputError, match=r"model\.window 30 px .* patch size \(4 px\)"):
        window_settings(card, 30, option="model.")
    with pytest.raises(BadInputError, match=r"model\.overlap 32 px"):
        window_settings(card, 32, 32, option="model.")


def test_default_predict_equals_explicit_card_window(bundled):
    st = _stack(bundled.card, 40)
    a = predict(st, bundled, precision="fp32", device="cpu")
    b = predict(st, bundled, precision="fp32", device="cpu", window=32, overlap=8)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.attrs["precision"] == "fp32" and a.attrs["device"] == "cpu"
    assert (a.attrs["window"], a.attrs["overlap"]) == (32, 8)


@pytest.mark.parametrize(("window", "overlap"), [(64, 16), (48, 24)])
def test_other_windows_are_tile_size_independent_away_from_edges(bundled, window, overlap):
    st = _stack(bundled.card, 150, seed=1)
    kw = dict(device="cpu", precision="fp32", window=window, overlap=overlap, batch_size=16)
    whole = predict(st, bundled, **kw)
    tile = predict(st.isel(y=slice(9, 150), x=slice(3, 147)), bundled, **kw)
    m = window - 1
    a = whole.isel(y=slice(9 + m, 150 - m), x=slice(3 + m, 147 - m))
    b = tile.sel(y=a["y"], x=a["x"])
    assert a.size > 0
    assert float(abs(a - b).max()) < 1e-5
    assert np.allclose(whole.sum("class"), 1, atol=1e-5)


def test_core_skips_halo_only_windows_and_keeps_the_core(bundled, monkeypatch):
    """A map job's tile asks only for its core: windows lying in the halo alone are not run,
    and the core's probabilities are those of the full run."""
    import importlib

    predict_mod = importlib.import_module("eo_fusion.models.predict")

    st = _stack(bundled.card, 120, seed=3)
    kw = dict(device="cpu", precision="fp32", batch_size=16)
    calls: list[int] = []
    real = predict_mod._forward

    def counting(run, wins, *a):
        calls.append(len(wins))
        return real(run, wins, *a)

    monkeypatch.setattr(predict_mod, "_forward", counting)
    full = predict(st, bundled, **kw)
    n_full = sum(calls)
    calls.clear()
    core = (slice(32, 88), slice(32, 88))
    part = predict(st, bundled, core=core, **kw)
    assert 0 < sum(calls) < n_full
    a, b = full.values[:, core[0], core[1]], part.values[:, core[0], core[1]]
    np.testing.assert_allclose(b, a, atol=1e-6)
    assert np.isnan(part.values[:, 0, 0]).all()  # no window that ran covers the far corner


def test_bf16_autocast_agrees_with_fp32_on_synthetic_inputs(bundled):
    st = _stack(bundled.card, 64, seed=2)
    fp32 = predict(st, bundled, device="cpu", precision="fp32")
    bf16 = predict(st, bundled, device="cpu", precision="bf16")
    assert bf16.attrs["precision"] == "bf16" and bf16.dtype == np.float32
    assert np.allclose(bf16.sum("class"), 1, atol=1e-5)
    assert float(abs(bf16 - fp32).max()) < 0.1
    assert float((bf16.argmax("class") == fp32.argmax("class")).mean()) >= 0.99


def _tiny_model():
    from eo_fusion.models.encoder import EncoderConfig, SpectralViT, ViTSize
    from eo_fusion.models.heads import LandCoverModel
    from eo_fusion.models.spectral import ALL_RANGES

    torch.manual_seed(0)
    cfg = EncoderConfig("custom", 4, 16, ALL_RANGES, dims=ViTSize(32, 2, 2, 32, 1, 2))
    return LandCoverModel(SpectralViT(cfg), 3, (0, 1), 8).eval()


@pytest.mark.slow
def test_compiled_model_gives_the_eager_output():
    from eo_fusion.models.predict import sliding_probs

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile (inductor) needs a C compiler on the CPU; none on PATH")
    net = _tiny_model()
    keys = ["s2:B02", "s2:B03", "s2:B04", "s2:B08"]
    arr = np.random.default_rng(0).normal(size=(4, 40, 40)).astype("float32")
    kw = dict(n_classes=3, window=16, batch_size=4)
    eager = sliding_probs(net, arr, keys, **kw, options=InferenceOptions("cpu", "fp32"))
    compiled = sliding_probs(net, arr, keys, **kw, options=InferenceOptions("cpu", "fp32", True))
    assert np.abs(compiled - eager).max() < 1e-4


def test_model_section_options_and_provenance(monkeypatch):
    with pytest.raises(ConfigError, match="device"):
        from eo_fusion.config import parse_spec

        parse_spec(ModelRef, {"device": "tpu"}, base_dir=".", source="job.yaml")
    with pytest.raises(Exception, match="overlap 32 must be less than window 32"):
        ModelRef(window=32, overlap=32)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    _no_gpu(monkeypatch)
    pred = ModelPredictor.from_ref(ModelRef(window=64))
    prov = pred.provenance()
    assert prov["model_device"] == "cpu" and prov["model_precision"] == "bf16"
    assert (prov["model_window"], prov["model_overlap"]) == (64, 32)
    assert prov["model_device_option"] == "auto" and prov["model_compile"] is False
    assert pred.options().option == "model."


def test_map_cli_refuses_an_absent_device_with_exit_2(repo_root, monkeypatch, capsys):
    _no_gpu(monkeypatch)
    job = repo_root / "pipelines" / "sample_landcover.yaml"
    assert main(["map", str(job), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "model.device 'cuda' was asked for" in err
    assert main(["map", str(job), "--precision", "fp16", "--device", "cpu"]) == 2
    assert "model.precision" in capsys.readouterr().err
    assert main(["map", str(job), "--device", "tpu"]) == 2
    assert "device" in capsys.readouterr().err


def test_normalising_in_place_gives_the_same_bits_and_reuses_the_array():
    """select_inputs normalises its own copy of a tile in place (no temporaries per tile):
    the values must be exactly those of the plain formula, percentile-scaled bands included."""
    from eo_fusion.models.card import BandNorm, normalize_bands

    rng = np.random.default_rng(3)
    values = rng.normal(1500, 900, (2, 3, 40, 50)).astype("float32")
    values[0, 1, :5] = np.nan
    norms = [BandNorm(mean=0.2, std=0.1, p1=100, p99=4000), BandNorm(mean=1400, std=800),
             BandNorm(mean=-0.5, std=2.0, p1=-10, p99=3000)]  # fmt: skip
    v = values.copy()
    for i, n in enumerate(norms):  # the formula, one step at a time, as the card defines it
        if n.p1 is not None:
            v[:, i] = np.clip((v[:, i] - np.float32(n.p1)) / np.float32(n.p99 - n.p1), 0, 1)
    expected = (v - np.float32([n.mean for n in norms])[:, None, None]) / np.float32(
        [n.std for n in norms]
    )[:, None, None]
    copy = normalize_bands(values, norms, axis=-3)
    own = values.copy()
    same = normalize_bands(own, norms, axis=-3, in_place=True)
    assert same is own
    np.testing.assert_array_equal(copy, expected)
    np.testing.assert_array_equal(own, expected)
    assert not np.array_equal(values, expected, equal_nan=True)  # the input was left alone
    with pytest.raises(TypeError, match="float32"):
        normalize_bands(values.astype("float64"), norms, in_place=True)
