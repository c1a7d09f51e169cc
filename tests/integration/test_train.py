"""Training on the real sample data through the stack stage: loss falls, resume, CLI fine-tune."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from eo_fusion.cli import main
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.config import load_pretrain_spec
from eo_fusion.train.pretrain import pretrain
from eo_fusion.train.sources import load_scenes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spec_and_scenes(repo_root, tmp_path_factory):
    spec = load_pretrain_spec(repo_root / "pipelines" / "pretrain_sample.yaml")
    keep = [s for s in spec.data.scenes if s.name == "slovenia" or s.name.endswith("_87_48")]
    data = spec.data.model_copy(update={"scenes": keep})
    out = tmp_path_factory.mktemp("pretrain")
    spec = spec.model_copy(
        update={"data": data, "steps": 60, "batch_size": 4, "warmup_steps": 5, "out": out,
                "checkpoint_every": 30, "threads": 1}
    )  # fmt: skip
    return spec, load_scenes(data, progress=False)


def _losses(out: Path) -> list[float]:
    with open(out / "loss.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_pretraining_loss_falls_on_real_sample_data(spec_and_scenes):
    spec, scenes = spec_and_scenes
    assert {s.name for s in scenes} >= {"slovenia"}
    assert any("s1-grd" in s.arrays and "s2-l2a" in s.arrays for s in scenes)  # a real S2-S1 pair
    model = pretrain(spec, scenes, progress=False)
    loss = _losses(Path(spec.out))
    assert len(loss) == 60
    assert np.mean(loss[-15:]) < 0.9 * np.mean(loss[:15])
    assert (Path(spec.out) / "loss.png").stat().st_size > 0
    assert "sar_vv" in model.card.encoder.ranges
    # Resume: a longer run with the same settings continues from the saved state.
    longer = spec.model_copy(update={"steps": 64})
    pretrain(longer, scenes, progress=False)
    resumed = _losses(Path(spec.out))
    assert len(resumed) == 64
    assert resumed[:60] == loss


def test_finetune_cli_on_slovenia_labels(spec_and_scenes, repo_root, tmp_path, capsys):
    spec, _ = spec_and_scenes
    if not (Path(spec.out) / "model" / ck.CARD).exists():
        pytest.skip("needs the pretraining test's output")
    cfg = yaml.safe_load((repo_root / "pipelines" / "finetune_landcover_sample.yaml").read_text())
    cfg |= {"pretrained": str(Path(spec.out) / "model"), "out": str(tmp_path / "ft"), "steps": 3,
            "batch_size": 2}  # fmt: skip
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["finetune", str(path), "--no-progress"]) == 0
    assert "hold-out: OA" in capsys.readouterr().out
    m = ck.load(tmp_path / "ft")
    hold = m.card.task("landcover").metrics["holdout"]
    assert hold["n_pixels"] > 1000
    assert [c.name for c in m.card.task("landcover").classes][:2] == [
        "cultivated land",
        "forest",
    ]
    assert main(["model", "info", str(tmp_path / "ft")]) == 0
    assert "s2-l1c" in capsys.readouterr().out
