"""Shift estimation and correction: synthetic truth, then the real BigEarthNet S1/S2 patches.

What the real data can and cannot show (measured, see docs/stacks.md):
* bands of one Sentinel-2 product are co-registered by construction: estimates < 0.3 px;
* a known shift (2.4 px east, 1.7 px south) applied to real S2 and S1 images is recovered within
  0.2 px and undone by the correction;
* S1<->S2 estimates on these 1.2 km patches mostly have confidences at the noise level (unrelated
  patch combinations reach 5.4); the gate decides from the confidence, and noise stays below it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from scipy import ndimage

from eo_fusion.catalogs.local import local_item
from eo_fusion.config import ModalitySpec
from eo_fusion.coreg.check import CoregOptions, structure_bands
from eo_fusion.coreg.shift import apply_shift, estimate_shift, feature_weight
from eo_fusion.stack import build_stack

BEN = Path(__file__).resolve().parents[2] / "catalogs" / "sample" / "data" / "bigearthnet"
TRUE_DX, TRUE_DY = 2.4, 1.7


def _pairs() -> list[tuple[Path, Path]]:
    out = []
    for s1 in sorted((BEN / "s1").iterdir()):
        meta = json.loads(next(s1.glob("*_labels_metadata.json")).read_text())
        out.append((s1, BEN / "s2" / meta["corresponding_s2_patch"]))
    return out


def _band(folder: Path, name: str) -> np.ndarray:
    with rasterio.open(next(folder.glob(f"*_{name}.tif"))) as ds:
        return ds.read(1).astype(np.float32)


def _interior_corr(a: np.ndarray, b: np.ndarray, margin: int = 8) -> float:
    sl = (slice(margin, -margin), slice(margin, -margin))
    x, y = a[sl].ravel(), b[sl].ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def test_synthetic_shift_sign_precision_and_correction() -> None:
    rng = np.random.default_rng(42)
    ref = ndimage.gaussian_filter(rng.normal(size=(128, 128)), 2.0)
    mov = apply_shift(ref, TRUE_DX, TRUE_DY)
    # mov(x, y) == ref(x - dx, y - dy): a feature at column 60 moves to column 62.4
    assert abs(mov[64, 62] - ref[64 - 2, 62 - 2]) < abs(mov[64, 62] - ref[64, 62])
    est = estimate_shift(ref, mov)
    assert abs(est.dx - TRUE_DX) < 0.05 and abs(est.dy - TRUE_DY) < 0.05
    assert est.confidence > 20
    back = apply_shift(mov, -est.dx, -est.dy)
    assert _interior_corr(back, ref) > 0.99  # two linear interpolations blur slightly
    noise = estimate_shift(ref, rng.normal(size=ref.shape))
    assert noise.confidence < 8  # unrelated images: no confident match


@pytest.mark.parametrize(("s1", "s2"), _pairs(), ids=lambda p: p.name[-11:])
def test_bigearthnet_s2_bands_coregistered_and_known_shift_recovered(s1: Path, s2: Path) -> None:
    red, green = _band(s2, "B04"), _band(s2, "B03")
    est = estimate_shift(red, green)
    assert est.magnitude < 0.3, est
    moved = apply_shift(green, TRUE_DX, TRUE_DY)
    e2 = estimate_shift(red, moved)
    assert abs(e2.dx - TRUE_DX) < 0.2 and abs(e2.dy - TRUE_DY) < 0.2, e2
    fixed = apply_shift(moved, -e2.dx, -e2.dy)
    e3 = estimate_shift(red, fixed)
    assert e3.magnitude < 0.2 + est.magnitude
    assert _interior_corr(fixed, green) > 0.98


@pytest.mark.parametrize(("s1", "s2"), _pairs(), ids=lambda p: p.name[-11:])
def test_bigearthnet_s1_known_shift_recovered_despite_speckle(s1: Path, s2: Path) -> None:
    vv = 10 ** (_band(s1, "VV") / 10)
    vh = 10 ** (_band(s1, "VH") / 10)
    base = estimate_shift(vv, vh, method="sar")
    moved = estimate_shift(vv, apply_shift(vh, TRUE_DX, TRUE_DY), method="sar")
    assert abs(moved.dx - base.dx - TRUE_DX) < 0.2, (base, moved)
    assert abs(moved.dy - base.dy - TRUE_DY) < 0.2, (base, moved)


def _items(s1: Path, s2: Path):
    bands = ("B02", "B03", "B04", "B08")
    when = datetime(2017, 6, 1, tzinfo=UTC)
    s2_item = local_item(
        s2.name, "s2-l2a", {f"s2:{b}": next(s2.glob(f"*_{b}.tif")) for b in bands}, when
    )
    files = {"s1:VV": next(s1.glob("*_VV.tif")), "s1:VH": next(s1.glob("*_VH.tif"))}
    s1_item = local_item(s1.name, "s1-grd", files, when, units="dB", nodata=-9999.0)
    with rasterio.open(files["s1:VV"]) as ds:
        gbox = GeoBox(ds.shape, ds.transform, ds.crs.to_wkt())
    return gbox, s2_item, s1_item


@pytest.mark.parametrize(("s1", "s2"), _pairs(), ids=lambda p: p.name[-11:])
def test_bigearthnet_s1_s2_record_and_gate(s1: Path, s2: Path) -> None:
    gbox, s2_item, s1_item = _items(s1, s2)
    mods = {"s2-l2a": ModalitySpec(), "s1-grd": ModalitySpec()}
    opts = CoregOptions()
    ds = build_stack(gbox, {"s2-l2a": [s2_item], "s1-grd": [s1_item]}, mods, coreg=opts)
    rec = json.loads(ds.attrs["coreg"])["s1-grd"]
    assert rec["reference"] == "s2-l2a" and rec["method"] == "sar"
    mag = float(np.hypot(rec["dx"], rec["dy"]))
    trusted = rec["confidence"] >= opts.min_confidence and mag <= opts.max_shift_px
    assert rec["applied"] == (trusted and mag >= opts.min_shift_px)


def test_build_stack_corrects_a_shifted_optical_modality(tmp_path: Path) -> None:
    s1, s2 = _pairs()[0]
    gbox, s2_item, _ = _items(s1, s2)
    # A second optical modality: the same bands moved 2.4 px east and 1.7 px south.
    files = {}
    for key, asset in s2_item.bands.items():
        with rasterio.open(asset.href) as src:
            profile = {**src.profile, "dtype": "float32", "nodata": np.nan}
            moved = apply_shift(src.read(1).astype(np.float32), TRUE_DX, TRUE_DY)
        path = tmp_path / f"{key[3:]}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(moved, 1)
        files[key] = path
    moved_item = local_item("moved", "s2-l1c", files, s2_item.datetime, nodata=-1.0)
    mods = {"s2-l2a": ModalitySpec(), "s2-l1c": ModalitySpec()}
    opts = CoregOptions(reference="s2-l2a")
    ds = build_stack(gbox, {"s2-l2a": [s2_item], "s2-l1c": [moved_item]}, mods, coreg=opts)
    rec = json.loads(ds.attrs["coreg"])["s2-l1c"]
    assert rec["applied"] is True, rec
    assert abs(rec["dx"] - TRUE_DX) < 0.2 and abs(rec["dy"] - TRUE_DY) < 0.2
    for band in ("s2:B04", "s2:B08"):
        ref = ds["s2-l2a"].sel({"s2-l2a:band": band}).values
        fixed = ds["s2-l1c"].sel({"s2-l1c:band": band}).values
        assert _interior_corr(ref, fixed) > 0.98
    # The mask follows the correction: pixels shifted in from outside are not valid.
    assert not ds["s2-l1c:valid"].values[:, 0].any()


def test_unrelated_real_s1_s2_patches_stay_below_the_confidence_gate() -> None:
    # Noise floor of the SAR<->optical confidence on real data: S2 of one patch against S1 of
    # another (and rotated S1), none of which can truly match.
    pairs = _pairs()
    s1 = [_band(p[0], "VV") for p in pairs]
    s2 = [_band(p[1], "B08") * 1e-4 for p in pairs]
    gate = CoregOptions().min_confidence
    worst = 0.0
    for i in range(len(pairs)):
        for j in range(len(pairs)):
            for k in (0, 1):  # as given and rotated 90 degrees
                if i == j and k == 0:
                    continue  # the true pair
                est = estimate_shift(s2[i], np.rot90(s1[j], k), method="sar")
                worst = max(worst, est.confidence)
    assert worst < gate, worst


def test_no_data_halo_does_not_pull_the_estimate_to_zero() -> None:
    """A tile whose right third and a corner are no data (the edge of a scene, a cloud mask),
    in both images at the same place: the boundary of the no-data region must not act as an
    edge that matches at zero shift. Filling and correlating it did (dx 1.10 for 1.30 here)."""
    rng = np.random.default_rng(3)
    base = ndimage.gaussian_filter(rng.random((160, 160)), 3.0)
    ref, mov = base.copy(), ndimage.shift(base, (-1.6, 1.3), order=3, mode="nearest")
    for a in (ref, mov):
        a[:, 105:] = np.nan
        a[:40, :50] = np.nan
    est = estimate_shift(ref, mov)
    assert abs(est.dx - 1.3) < 0.07 and abs(est.dy + 1.6) < 0.07, est
    w = feature_weight(ref)
    assert (w[:, 102:] == 0).all() and (w[50:, 60:90] == 1).all()


def test_structure_image_leaves_out_coarse_and_categorical_bands() -> None:
    keys = ["s2:B01", "s2:B04", "s2:B09", "s2:B11", "s2:SCL"]
    assert structure_bands(keys) == [1, 3]  # 60 m B01/B09 and the SCL classes are left out
    assert structure_bands(["s2:B01"]) == [0]  # nothing else: keep what there is


def test_run_record_summary_and_report_section() -> None:
    from eo_fusion.coreg.record import coreg_rows, summarize_coreg
    from eo_fusion.pipeline.report import _coreg_markdown

    ref = {"reference": "s2-l2a", "role": "reference", "applied": False}
    tiles = {
        "r000_c000": {
            "s2-l2a": ref,
            "s1-grd": {"reference": "s2-l2a", "dx": 0.6, "dy": -0.2, "confidence": 12.0,
                       "method": "sar", "applied": True, "reason": "significant and confident"},
        },
        "r000_c001": {
            "s2-l2a": ref,
            "s1-grd": {"reference": "s2-l2a", "dx": 0.1, "dy": 0.0, "confidence": 6.0,
                       "method": "sar", "applied": False, "reason": "confidence below 8.0"},
        },
        "r001_c000": {"s2-l2a": ref, "s1-grd": {"reference": "s2-l2a", "applied": False,
                                                 "reason": "image has fewer than 16 valid"}},
    }  # fmt: skip
    s = summarize_coreg(tiles)["s1-grd"]
    assert (s["tiles"], s["estimated"], s["applied"]) == (3, 2, 1)
    assert s["median_dx_px"] == 0.35 and s["min_confidence"] == 6.0
    assert s["max_shift_px"] == round(float(np.hypot(0.6, 0.2)), 3)
    assert s["reasons"] == {"confidence below 8.0": 1, "image has fewer than 16 valid": 1}
    rows = coreg_rows(tiles)
    assert [r["tile"] for r in rows] == ["r000_c000", "r000_c001", "r001_c000"]
    md = "\n".join(_coreg_markdown({"summary": summarize_coreg(tiles), "tiles": rows}))
    assert "## Co-registration" in md and "| r000_c000 | s1-grd | 0.60 | -0.20 | 12.0 | yes |" in md
    assert _coreg_markdown({}) == []
