"""Multi-label scene training on BigEarthNet's CORINE labels (the sample catalog's S2 L2A patches
with their S1 partners): chips per item, multi-hot targets from the STAC property, group split,
mAP metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from eo_fusion.cli import main
from eo_fusion.train.chips import ChipManifest, open_chip
from eo_fusion.train.datasets import ChipDataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scenes(repo_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scenes")
    cfg = yaml.safe_load((repo_root / "pipelines" / "train_bigearthnet_sample.yaml").read_text())
    cfg["training"] |= {"steps": 3, "threads": 1, "device": "cpu"}
    cfg["out"] = str(tmp / "out")
    job = tmp / "job.yaml"
    job.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(job)]) == 0
    (run_dir,) = (tmp / "out").iterdir()
    return run_dir


def test_one_chip_per_labelled_patch_with_its_corine_labels(scenes, sample_dir):
    m = ChipManifest.load(scenes)
    assert m is not None
    names = [c["name"] for c in m.classes]
    assert len(m.usable()) == 5
    for cid in m.usable():
        item = sample_dir / "stac" / "s2-l2a" / cid / f"{cid}.json"
        want = json.loads(item.read_text())["properties"]["bigearthnet:labels"]
        assert sorted(names[k] for k in m.chips[cid].labels or []) == sorted(want)
        ds = open_chip(scenes, cid)
        assert {"s2-l2a", "s1-grd"} <= set(ds.data_vars)  # the S1 partner is on the same chip
        assert ds["s2-l2a"].shape[-2:] == (64, 64)
    sample = ChipDataset(scenes, None)[0]
    assert sample["labels"].shape == (len(names),)
    assert sample["labels"].sum() == len(m.chips[sample["id"]].labels or [])


def test_groups_split_and_map_report(scenes):
    m = ChipManifest.load(scenes)
    assert m is not None
    splits = {r.block[0]: set() for r in m.chips.values()}
    for r in m.chips.values():
        splits[r.block[0]].add(r.split)
    assert all(len(s) == 1 for s in splits.values())  # a group is on one side only
    assert {"train", "val"} <= {r.split for r in m.chips.values()}
    (train_dir,) = scenes.glob("train-*")
    report = json.loads((train_dir / "report.json").read_text())
    val = report["metrics"]["val"]
    assert val["n_samples"] == len(m.usable("val"))
    assert 0 <= val["map"] <= 1 and 0 <= val["ap_micro"] <= 1
    positives = np.zeros(len(m.classes), int)
    for cid in m.usable("val"):
        positives[m.chips[cid].labels or []] += 1
    assert [val["per_class"][c["name"]]["n_ref"] for c in m.classes] == positives.tolist()
    assert "mAP" in (train_dir / "report.md").read_text()
    assert (train_dir / "model" / "scene_head.safetensors").stat().st_size > 0
    card = json.loads((train_dir / "model" / "model_card.json").read_text())
    assert card["tasks"]["scene"]["inputs"]["s1-grd"] == ["s1:VV", "s1:VH"]


def test_multilabel_scores_against_hand_computed_ap():
    from eo_fusion.train.tasks import multilabel_scores

    truth = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.8, 0.7], [0.3, 0.6], [0.1, 0.9]])
    out = multilabel_scores(truth, probs, ["a", "b"])
    # class a: ranking 0.9(+), 0.8(-), 0.3(+) -> AP = (1/1 + 2/3) / 2
    # class b: ranking 0.9(-), 0.7(+), 0.6(+) -> AP = (1/2 + 2/3) / 2
    ap_a, ap_b = (1 + 2 / 3) / 2, (1 / 2 + 2 / 3) / 2
    assert out["per_class"]["a"]["ap"] == pytest.approx(ap_a)
    assert out["per_class"]["b"]["ap"] == pytest.approx(ap_b)
    assert out["map"] == pytest.approx((ap_a + ap_b) / 2)
    assert out["n_samples"] == 4


def test_scene_job_needs_scene_task(repo_root, tmp_path):
    cfg = yaml.safe_load((repo_root / "pipelines" / "train_bigearthnet_sample.yaml").read_text())
    cfg["training"]["task"] = "segmentation"
    job = Path(tmp_path / "job.yaml")
    job.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(job)]) == 2
