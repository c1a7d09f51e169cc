"""Plot helpers draw labelled, legible figures from arrays in the ModalityStack layout."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from eo_fusion import plot
from eo_fusion.errors import BadInputError


def _grid(values: np.ndarray, bands: list[str] | None = None) -> xr.DataArray:
    ny, nx = values.shape[-2:]
    coords = {"y": 5_000_000 - 10 * np.arange(ny) - 5, "x": 500_000 + 10 * np.arange(nx) + 5}
    dims = ("y", "x")
    if bands is not None:
        coords["band"] = bands
        dims = ("band", "y", "x")
    return xr.DataArray(values.astype(np.float32), dims=dims, coords=coords)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_true_colour_composite_has_metre_axes_and_stretch():
    rng = np.random.default_rng(0)
    da = _grid(rng.uniform(0, 0.3, (3, 20, 30)), ["s2:B04", "s2:B03", "s2:B02"])
    ax = plot.composite(da)
    img = ax.get_images()[0].get_array()
    assert img.shape == (20, 30, 3)
    assert float(img.min()) == 0.0 and float(img.max()) == 1.0
    assert ax.get_xlabel() == "x (m)"
    assert ax.get_images()[0].get_extent() == [500_000, 500_300, 4_999_800, 5_000_000]


def test_missing_band_is_named():
    da = _grid(np.zeros((1, 4, 4)), ["s2:B04"])
    with pytest.raises(BadInputError, match="s2:B03"):
        plot.composite(da)


def test_sar_converts_linear_to_db_and_labels_colour_bar():
    da = _grid(np.full((1, 8, 8), 0.01), ["s1:VV"])
    ax = plot.sar(da, in_db=False)
    assert np.allclose(ax.get_images()[0].get_array(), -20.0)
    assert "dB" in ax.figure.axes[-1].get_ylabel()


def test_elevation_has_hillshade_and_metre_colour_bar():
    yy, xx = np.mgrid[0:16, 0:16]
    ax = plot.elevation(_grid(100 + yy + 0.5 * xx))
    assert len(ax.get_images()) == 2
    assert ax.figure.axes[-1].get_ylabel() == "elevation (m)"


def test_class_map_legend_lists_present_classes_only():
    classes = [
        {"value": 1, "name": "forest", "color": "#228b22"},
        {"value": 2, "name": "water", "color": "#1e90ff"},
        {"value": 3, "name": "urban", "color": "#808080"},
    ]
    ax = plot.class_map(_grid(np.array([[1, 1], [2, 2]])), classes, title="classes")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["1: forest", "2: water"]


def test_timeseries_point_and_region():
    times = pd.date_range("2020-01-01", periods=5, freq="MS")
    values = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 4, 4), np.float32)
    da = _grid(values[0]).expand_dims(time=times).copy(data=values)
    ax = plot.timeseries(da, x=500_005, y=4_999_995, label="point", ylabel="NDVI")
    assert list(ax.get_lines()[0].get_ydata()) == [0, 1, 2, 3, 4]
    plot.timeseries(da, mask=xr.ones_like(da.isel(time=0), dtype=bool), ax=ax, label="region")
    assert len(ax.get_lines()) == 2 and ax.get_ylabel() == "NDVI"


def test_continuous_blanks_nodata_and_labels_colour_bar():
    da = _grid(np.array([[0.5, 255.0], [0.9, 0.1]]))
    da.attrs["nodata"] = 255.0
    ax = plot.continuous(da, label="confidence", vmin=0, vmax=1)
    shown = ax.get_images()[0].get_array()
    assert bool(np.ma.getmaskarray(shown)[0, 1]) or np.isnan(shown[0, 1])
    assert ax.figure.axes[-1].get_ylabel() == "confidence"
