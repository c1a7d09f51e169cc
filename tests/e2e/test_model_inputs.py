"""The real model on the sample job: a checkpoint edited in place, a forged checkpoint, and the
report's account of the inputs (real Sentinel-2 L1C dates with clouds, the DEM), with strict."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from test_map_sample import SAMPLE_JOB, _classes, _job_file

from eo_fusion.cli import main
from eo_fusion.config import load_job
from eo_fusion.errors import CheckpointError
from eo_fusion.models.checkpoint import BUNDLED_DIR, CARD
from eo_fusion.pipeline.manifest import RunManifest
from eo_fusion.pipeline.progress import ProgressHook
from eo_fusion.pipeline.run import run_job


class Phases(ProgressHook):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def phase(self, name: str) -> None:
        self.seen.append(name)


@pytest.fixture
def checkpoint(tmp_path, map_checkpoint):
    src = map_checkpoint or str(BUNDLED_DIR)
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_checkpoint_edited_in_place_recomputes_and_a_forged_one_fails_first(tmp_path, checkpoint):
    # One 128 px tile over the sample area keeps the real model quick.
    job_file = _job_file(tmp_path, SAMPLE_JOB, str(checkpoint), tile_size=128, halo=16)
    first = run_job(load_job(job_file))
    assert first.ok and first.tiles_total == 1
    before = _classes(first.run_dir, "sample-landcover")
    prov = RunManifest.load(first.run_dir).provenance
    assert prov["inputs"]["model"]["model_card_sha256"] == prov["model_card_sha256"]

    # The card rewritten in place (same weights): the tile is not reused.
    card = json.loads((checkpoint / CARD).read_text())
    card["code_version"] = str(card.get("code_version", "")) + "+edited"
    (checkpoint / CARD).write_text(json.dumps(card, indent=1))
    again = run_job(load_job(job_file))
    assert again.run_dir == first.run_dir and again.tiles_reused == 0
    assert again.recomputed == {"inputs changed (model)": ["r000_c000"]}
    np.testing.assert_array_equal(_classes(again.run_dir, "sample-landcover"), before)

    # Forged weights: refused once, before the search and before any worker starts.
    weights = checkpoint / card["weights"]["file"]
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(100)
    weights.write_bytes(bytes(data))
    phases = Phases()
    with pytest.raises(CheckpointError, match=r"do not match the sha256"):
        run_job(load_job(job_file), progress=phases)
    assert phases.seen == []  # not even the search ran
    assert RunManifest.load(first.run_dir).tiles["r000_c000"].state == "done"  # untouched


def test_sample_report_tells_the_truth_about_inputs_and_strict_fails(
    tmp_path, capsys, map_checkpoint
):
    job_file = _job_file(tmp_path, SAMPLE_JOB, map_checkpoint, tile_size=128, halo=16)
    s = run_job(load_job(job_file))
    assert s.ok
    report = json.loads((s.run_dir / "report.json").read_text())
    inputs = report["inputs"]
    tile = inputs["per_tile"]["r000_c000"]
    assert inputs["mapped_pixels"] == tile["mapped_pixels"] > 0
    assert 0.0 <= inputs["partial_share"] <= 1.0
    assert inputs["search"]["s2-l1c"]["items"] >= 1 and not inputs["search"]["s2-l1c"]["truncated"]
    # What the pixels came from: every item read, with the content hash of each local asset.
    items = report["provenance"]["inputs"]["items"]
    assert set(items) == {"s2-l1c", "dem"}
    for per_item in items.values():
        for p in per_item.values():
            assert all(a["kind"] == "local" and len(a["sha256"]) == 64
                       for a in p["assets"].values())  # fmt: skip
    md = (s.run_dir / "report.md").read_text()
    assert "## Inputs" in md and "## What the pixels came from" in md
    with capsys.disabled():
        print(json.dumps({k: inputs[k] for k in ("partial_share", "dates_without_clear",
                                                 "nodata_mismatch", "issues")}))  # fmt: skip

    # strict: true makes whatever the report lists fatal (exit 1, nothing published).
    data = yaml.safe_load(job_file.read_text())
    data["strict"] = True
    data["output"]["dir"] = str(tmp_path / "strict")
    strict_file = tmp_path / "strict.yaml"
    strict_file.write_text(yaml.safe_dump(data))
    if inputs["issues"]:
        assert main(["map", str(strict_file)]) == 1
        err = capsys.readouterr().err
        assert "(strict)" in err and "input problem" in err
        (run_dir,) = (tmp_path / "strict").iterdir()
        assert not any(run_dir.glob("*_classes.tif")) and not (run_dir / "stac").exists()
    else:
        assert main(["map", str(strict_file)]) == 0
