"""Tiles that run in one process share work: windows straddling tile edges run once and give
the values each tile would compute itself (eo_fusion.models.shared_windows, predict(shared=...)),
the map job's tile order and column strips, and source files closed row by row."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from eo_fusion.grid import make_tiles
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.shared_windows import SharedWindows, sharing_tiles

predict_mod = importlib.import_module("eo_fusion.models.predict")

H, W, HALO = 96, 150, 31  # two tiles side by side: cores x 0-75 and 75-150


@pytest.fixture(scope="module")
def bundled():
    return ck.load()


@pytest.fixture(scope="module")
def scene(bundled):
    """Normalised land-cover inputs (9 of the card's bands) over the two tiles' area."""
    keys = [k for ks in bundled.card.task("landcover").inputs.values() for k in ks][:9]
    rng = np.random.default_rng(4)
    return keys, rng.normal(size=(len(keys), H, W)).astype("float32")


def _tile(bundled, scene, x0, x1, shared, counts=None, precision="bf16", rows=(0, H)):
    """Probabilities of the core ``rows`` × x0:x1 predicted on core + halo, as a map job does
    (the grid: the whole scene)."""
    keys, arr = scene
    lo, hi = max(0, x0 - HALO), min(W, x1 + HALO)
    top, bottom = max(0, rows[0] - HALO), min(H, rows[1] + HALO)
    opts = predict_mod.InferenceOptions("cpu", precision)
    real = predict_mod._forward

    def counting(run, wins, *a):
        counts.append(len(wins))
        return real(run, wins, *a)

    if counts is not None:
        predict_mod._forward = counting
    try:
        out = predict_mod.sliding_probs(
            bundled.landcover, arr[:, top:bottom, lo:hi], keys, n_classes=5, window=32,
            overlap=8, offset=(top, lo), batch_size=16, options=opts,
            core=(slice(rows[0] - top, rows[1] - top), slice(x0 - lo, x1 - lo)),
            shared=shared, grid=(slice(0, H - top), slice(0, W - lo)),
        )  # fmt: skip
    finally:
        predict_mod._forward = real
    return out[:, rows[0] - top : rows[1] - top, x0 - lo : x1 - lo]


def test_a_neighbour_takes_the_shared_windows_and_gets_its_own_values(bundled, scene):
    shared = SharedWindows()
    left = _tile(bundled, scene, 0, 75, shared)
    stored = len(shared)
    assert stored > 0  # the windows straddling x = 75, and only those (no neighbour elsewhere)
    counts: list[int] = []
    right = _tile(bundled, scene, 75, 150, shared, counts)
    assert len(shared) == 0 and shared.nbytes == 0  # taken by the only other tile: removed
    alone_counts: list[int] = []
    right_alone = _tile(bundled, scene, 75, 150, SharedWindows(), alone_counts)
    # Bit for bit the values the tile computes itself, with fewer windows run.
    np.testing.assert_array_equal(right, right_alone)
    assert sum(counts) == sum(alone_counts) - stored
    left_alone = _tile(bundled, scene, 0, 75, None)
    np.testing.assert_array_equal(left, left_alone)


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 2, 0, 3)])
def test_four_tiles_at_a_corner_get_their_own_values_in_any_order(bundled, scene, order):
    """Whichever tile runs first, each gets the values it computes alone, and the last one
    leaves nothing behind (a window at the corner is shared by all four)."""
    cores = [(rows, cols) for rows in ((0, 48), (48, 96)) for cols in ((0, 75), (75, 150))]
    shared = SharedWindows()
    got = {i: _tile(bundled, scene, *cores[i][1], shared, rows=cores[i][0]) for i in order}
    assert len(shared) == 0 and shared.nbytes == 0
    for i, (rows, cols) in enumerate(cores):
        alone = _tile(bundled, scene, *cols, SharedWindows(), rows=rows)
        np.testing.assert_array_equal(got[i], alone)
    assert shared.hits > 0


def test_shared_batches_have_one_size_so_values_do_not_depend_on_the_batch(bundled, scene):
    """Every forward pass of a sharing tile has ``batch_size`` windows (the last one padded), so
    a window's output does not depend on which windows ran with it or which tile ran it."""
    real = predict_mod._forward
    sizes: list[int] = []

    def record(run, wins, keys, doy, device, fixed):
        sizes.append(max(len(wins), fixed))
        return real(run, wins, keys, doy, device, fixed)

    predict_mod._forward = record
    try:
        _tile(bundled, scene, 75, 150, SharedWindows(), counts=None)
    finally:
        predict_mod._forward = real
    assert sizes and set(sizes) == {16}
    # In fp32 too: a whole-area prediction and two sharing tiles agree to rounding.
    shared = SharedWindows()
    tiles = [_tile(bundled, scene, a, b, shared, precision="fp32") for a, b in ((0, 75), (75, 150))]
    keys, arr = scene
    whole = predict_mod.sliding_probs(
        bundled.landcover, arr, keys, n_classes=5, window=32, overlap=8, batch_size=16,
        options=predict_mod.InferenceOptions("cpu", "fp32"),
    )  # fmt: skip
    np.testing.assert_allclose(np.concatenate(tiles, axis=2), whole, atol=1e-5)


def test_changed_pixels_are_not_taken_from_a_neighbour(bundled, scene):
    keys, arr = scene
    shared = SharedWindows()
    _tile(bundled, scene, 0, 75, shared)
    stored = len(shared)
    changed = (keys, arr.copy())
    changed[1][:, :, 70:80] += 1.0  # the pixels under the shared windows differ
    counts: list[int] = []
    right = _tile(bundled, changed, 75, 150, shared, counts)
    alone = _tile(bundled, changed, 75, 150, SharedWindows())
    np.testing.assert_array_equal(right, alone)
    assert shared.hits == 0 and len(shared) == 2 * stored  # both tiles' edges kept, none taken


def test_entries_are_bounded_oldest_first():
    shared = SharedWindows(max_bytes=3 * 400)
    for i in range(5):
        shared.put(i, np.zeros(100, "float32"), uses=1)
    assert len(shared) == 3 and shared.nbytes == 1200
    assert shared.take(0) is None and shared.take(4) is not None and shared.take(4) is None
    # Two sharing tiles that ran the same window at once: the second one's put is its use.
    shared.put("both", np.zeros(100, "float32"), uses=1)
    shared.put("both", np.zeros(100, "float32"), uses=1)
    assert shared.take("both") is None and len(shared) == 2 and shared.nbytes == 800


def test_a_window_is_shared_only_across_an_edge_with_a_tile_behind_it():
    core, grid = slice(31, 95), slice(0, 200)
    assert sharing_tiles(40, 32, core, grid) == 1  # inside the core
    assert sharing_tiles(20, 32, core, grid) == 2  # reaches into the tile before
    assert sharing_tiles(80, 32, core, grid) == 2  # reaches into the tile after
    assert sharing_tiles(80, 32, core, slice(0, 95)) == 1  # the grid ends with this core
    assert sharing_tiles(20, 32, core, slice(31, 200)) == 1  # ... or starts with it


def test_tiles_know_the_part_of_their_halo_inside_the_grid():
    gbox = GeoBox.from_bbox((0, 0, 1000, 700), "EPSG:32633", resolution=10)  # 70 x 100 px
    tiles = {t.id: t for t in make_tiles(gbox, 40, halo=8)}
    first, last = tiles["r000_c000"], tiles["r001_c002"]
    assert first.grid_in_padded == (slice(8, 56), slice(8, 56))
    # Core rows 40-70 and columns 80-100, padded by 8: the grid ends 30 / 20 px into the core.
    assert last.grid_in_padded == (slice(0, 38), slice(0, 28))


def test_tiles_are_submitted_so_that_neighbours_do_not_run_at_the_same_time():
    from types import SimpleNamespace

    from eo_fusion.pipeline.plan import submission_order

    tiles = [SimpleNamespace(row=r, col=c) for r in range(2) for c in range(5)]
    tasks = [SimpleNamespace(tile=t) for t in tiles]
    order = [(t.tile.row, t.tile.col) for t in submission_order(tasks)]  # type: ignore[arg-type]
    assert order == [(0, 0), (0, 2), (0, 4), (0, 1), (0, 3), (1, 0), (1, 2), (1, 4), (1, 1), (1, 3)]


def test_worker_processes_get_column_strips():
    from types import SimpleNamespace

    from eo_fusion.pipeline.execute import column_strips

    tasks = [
        SimpleNamespace(tile=SimpleNamespace(row=r, col=c)) for r in range(2) for c in range(5)
    ]
    assert column_strips(["w1"], tasks) == {}  # type: ignore[arg-type]
    strips = column_strips(["a", "b"], tasks)  # type: ignore[arg-type]
    assert strips == {0: ["a"], 1: ["a"], 2: ["a"], 3: ["b"], 4: ["b"]}
    assert column_strips(["a", "b", "c"], tasks) == {}  # type: ignore[arg-type]  # < 2 columns each


def test_source_files_are_closed_when_a_row_of_tiles_is_done(monkeypatch):
    from types import SimpleNamespace

    from eo_fusion.pipeline import run

    calls: list[int] = []
    monkeypatch.setattr(run, "release_files", lambda: calls.append(1))
    tasks = [
        SimpleNamespace(tile_id=f"r{r}c{c}", tile=SimpleNamespace(row=r, col=c))
        for r in range(2)
        for c in range(3)
    ]
    done = run._row_release(tasks)  # type: ignore[arg-type]
    for tile_id in ("r0c0", "r0c2", "r1c0", "unknown"):
        done(tile_id)
    assert calls == []
    done("r0c1")
    assert calls == [1]  # row 0 is done; row 1 is not
