"""Block cross-validation pieces: folds partition the scene, buffers keep training pixels away
from test blocks, intervals match Student-t, profiles and the docs section markers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from eo_fusion.errors import BadInputError, ConfigError
from eo_fusion.evaluate.config import ALL_ROWS, QUICK, load_evaluate_spec
from eo_fusion.evaluate.folds import block_ids, dilate, make_splits
from eo_fusion.evaluate.report import END, START, carry_section, splice
from eo_fusion.evaluate.scenes import monthly
from eo_fusion.evaluate.stats import interval


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_folds_partition_the_scene_into_whole_blocks_with_a_buffer(seed):
    shape, block, buffer = (101, 100), 25, 4
    splits = make_splits(shape, block=block, buffer=buffer, folds=5, seed=seed)
    ids = block_ids(shape, block, np.random.default_rng(seed))  # the same draw as make_splits
    tests = np.stack([s.test for s in splits])
    assert (tests.sum(0) == 1).all()  # every pixel is tested in exactly one fold
    for s in splits:
        assert not (s.train & s.test).any() and not (s.train & s.buffer).any()
        assert (s.train | s.test | s.buffer).all()
        # whole blocks: a block is either entirely in the test set or not at all
        assert all(s.test[ids == b].all() or not s.test[ids == b].any() for b in np.unique(ids))
        # no training pixel within `buffer` px (Chebyshev) of a test pixel
        ty, tx = np.nonzero(s.test)
        ry, rx = np.nonzero(s.train)
        near = np.maximum(abs(ry[:, None] - ty[None]), abs(rx[:, None] - tx[None])).min(1)
        assert near.min() == buffer + 1
    counts = sorted(len(np.unique(ids[s.test])) for s in splits)
    assert counts[-1] - counts[0] <= 1  # blocks dealt evenly


def test_seeds_draw_different_block_grids():
    a = make_splits((101, 100), block=25, buffer=0, folds=5, seed=0)
    b = make_splits((101, 100), block=25, buffer=0, folds=5, seed=1)
    assert any((x.test != y.test).any() for x, y in zip(a, b, strict=True))


def test_too_few_blocks_names_the_scene():
    with pytest.raises(BadInputError, match=r"scene 'tiny'.*fewer than the 5 folds"):
        make_splits((20, 20), block=25, buffer=1, folds=5, seed=0, name="tiny")


def test_dilate_is_a_square_neighbourhood():
    m = np.zeros((9, 9), bool)
    m[4, 4] = True
    assert dilate(m, 2).sum() == 25 and dilate(m, 0).sum() == 1


def test_intervals_are_student_t_and_corrected_is_wider():
    v = [0.8, 0.85, 0.9, 0.82, 0.88, 0.86]
    naive = interval(v, kind="naive")
    sd = np.std(v, ddof=1)
    assert naive.half == pytest.approx(sps.t.ppf(0.975, 5) * sd / math.sqrt(6))
    corr = interval(v, kind="corrected", test_train_ratio=0.25)
    assert corr.half == pytest.approx(sps.t.ppf(0.975, 5) * sd * math.sqrt(1 / 6 + 0.25))
    assert corr.mean == pytest.approx(np.mean(v)) and corr.half > naive.half
    assert math.isinf(interval([0.9]).half) and interval([]).n == 0
    assert not interval([0.1, 0.12, 0.11]).overlaps(interval([0.9, 0.91, 0.92]))


def test_monthly_means_keep_gaps_as_nan():
    times = np.array(["2015-07-11", "2015-07-31", "2015-09-09"], dtype="datetime64[ns]")
    arr = np.array([1.0, np.nan, 3.0], dtype="float32").reshape(3, 1, 1, 1)
    out, months = monthly(arr, times)
    assert months.tolist() == [6, 7, 8]
    assert out[0, 0, 0, 0] == 1.0 and np.isnan(out[1]).all() and out[2, 0, 0, 0] == 3.0


def test_splice_replaces_only_the_marked_section():
    page = f"# Model\n\nintro\n\n{START}\nold\n{END}\n\n## After\n"
    new = splice(page, "## Evaluation\nnew table")
    assert "old" not in new and "new table" in new and new.endswith("## After\n")
    assert splice(new, "again").count(START) == 1
    assert splice("# Model\n", "x").endswith(f"{START}\nx\n{END}\n")
    with pytest.raises(BadInputError, match="only one of the markers"):
        splice(f"a {START} b", "x")
    # a generator rewriting the whole page (make model) keeps the section
    regenerated = carry_section(new, "# Model v2\n")
    assert regenerated.startswith("# Model v2") and "new table" in regenerated
    assert carry_section("# no markers\n", "# v2\n") == "# v2\n"


def test_profiles_merge_and_unknown_keys_fail(repo_root, tmp_path):
    path = repo_root / "pipelines" / "evaluate_sample.yaml"
    full = load_evaluate_spec(path)
    assert full.folds == 5 and full.seeds == [0, 1, 2] and list(full.rows) == list(ALL_ROWS)
    quick = load_evaluate_spec(path, "quick")
    assert quick.folds == QUICK["folds"] and quick.profile == "quick"
    assert quick.ours.pretrain["steps"] == 2 and quick.ours.pretrain["lr"] == 0.001  # merged
    medium = load_evaluate_spec(path, "medium")
    assert medium.folds == 3 and medium.ours.finetune["mode"] == "full"
    with pytest.raises(ConfigError, match="no profile 'huge'"):
        load_evaluate_spec(path, "huge")
    raw = yaml.safe_load(path.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw | {"fold": 3}))
    with pytest.raises(ConfigError, match="fold"):
        load_evaluate_spec(bad)
    bad.write_text(yaml.safe_dump(raw | {"ours": {"pretrain": {"stepz": 3}}}))
    with pytest.raises(ConfigError, match="stepz"):
        load_evaluate_spec(bad)
