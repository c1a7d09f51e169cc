"""`eo-fusion evaluate --quick` end to end on the real Slovenia sample (cropped to 64 × 64 px to
stay fast): every row is scored on every split, the table and the docs section have their
structure, and the splits recorded keep test blocks, buffer and training pixels apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from eo_fusion.cli import main
from eo_fusion.evaluate.config import ALL_ROWS, load_evaluate_spec
from eo_fusion.evaluate.report import END, START
from eo_fusion.evaluate.run import scene_splits
from eo_fusion.train.data import Scene

# ~20 s of CPU (most of it building the stack and importing torch); longer on a loaded machine.
pytestmark = pytest.mark.slow

# The upper-left 64 × 64 px of the Slovenia scene (same pixel grid: 9.9948 m × 9.9975 m).
CROP = {"bbox": [465181.052, 5079614.793, 465820.718, 5080254.633], "shape": [64, 64]}


def test_quick_evaluation_end_to_end(repo_root, tmp_path, capsys):
    cfg = yaml.safe_load((repo_root / "pipelines" / "evaluate_sample.yaml").read_text())
    cfg["out"] = str(tmp_path / "out")
    cfg["block"] = 16
    cfg["data"]["scenes"][0] |= CROP
    path = tmp_path / "evaluate.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    page = tmp_path / "model.md"
    page.write_text(f"# Model\n\n{START}\nstale\n{END}\n\n## Next\n")

    assert main(["evaluate", str(path), "--quick", "--docs", str(page)]) == 0
    out = capsys.readouterr().out
    assert "| row | model | OA | mIoU | macro F1 | splits |" in out

    res = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    spec = load_evaluate_spec(path, "quick")
    assert len(res["splits"]) == spec.folds * len(spec.seeds) == 2
    for rec in res["splits"]:
        assert set(rec["rows"]) == set(ALL_ROWS)
        for row in rec["rows"].values():
            assert 0 <= row["oa"] <= 1 and 0 <= row["miou"] <= 1 and 0 <= row["f1_macro"] <= 1
            assert int(np.sum(row["confusion"])) == rec["test_pixels"] > 0
    labelled = res["data"]["scenes"][0]["labelled_pixels"]
    assert sum(r["test_pixels"] for r in res["splits"]) == labelled  # folds partition the labels
    summary = res["summary"]["rows"]
    assert list(summary) == list(ALL_ROWS)
    for per in summary.values():
        for m in ("oa", "miou", "f1_macro"):
            assert per[m]["n"] == 2 and len(per[m]["values"]) == 2
            assert per[m]["half"] >= per[m]["naive_half"] > 0  # corrected is the wider one

    md = (tmp_path / "out" / "evaluation.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in table] == list(ALL_ROWS)
    assert all(line.count("±") == 3 for line in table)
    assert "1 km²" in md and "Nadeau–Bengio" in md and "evaluate" in md
    docs = page.read_text()
    assert "stale" not in docs and docs.count(START) == 1 and docs.endswith("## Next\n")
    assert "## Evaluation" in docs and "ours-pretrained-masked" in docs

    # The recorded split sizes are those of the folds (blocks of 16 px, buffer 4 px).
    shape = tuple(res["data"]["scenes"][0]["shape"])
    dummy = Scene("slovenia", {"x": np.zeros((1, *shape), "float32")}, {"x": ["s2:B04"]})
    for fold, splits in enumerate(scene_splits(spec, [dummy], 0)):
        (sp,) = splits
        assert (
            not (sp.train & sp.test).any()
            and sp.buffer.sum() == res["splits"][fold]["buffer_pixels"]
        )
