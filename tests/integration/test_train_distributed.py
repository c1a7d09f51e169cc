"""Data-parallel training (2 gloo processes under torchrun) and resuming a killed run.

Both run the real training loop (eo_fusion.train.loop.fit) on the fine-tuning code's
LandCoverModel, which has batch norm, through tests/integration/_train_worker.py.

Tolerance: 2 processes with the same global batch follow the one-process curve to a relative
1e-4 per step (measured: ~1e-7, float summation order); a resumed run repeats the
uninterrupted curve to 1e-6.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("_train_worker.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _curve(out: Path) -> np.ndarray:
    return np.array([row[:2] for row in json.loads((out / "curve.json").read_text())])


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("single")
    _run([sys.executable, str(WORKER), str(out)])
    return _curve(out)


def test_two_gloo_processes_follow_the_single_process_curve(single, tmp_path):
    port = _free_port()
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            str(WORKER),
            str(tmp_path),
        ]
    )
    ddp = _curve(tmp_path)
    assert ddp[:, 0].tolist() == single[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(ddp[:, 1], single[:, 1], rtol=1e-4)
    # Not trivially equal: the curve moves, so equal curves mean equal updates.
    assert np.ptp(single[:, 1]) > 1e-3


def test_resume_of_a_killed_run_continues_the_same_curve(single, tmp_path):
    killed = _run([sys.executable, str(WORKER), str(tmp_path), "--die-at", "3"], check=False)
    assert killed.returncode == 137
    assert not (tmp_path / "curve.json").exists()
    state = json.loads((tmp_path / "last" / "state.json").read_text())
    assert state["step"] == 2  # the checkpoint before the kill (every 2 steps)
    _run([sys.executable, str(WORKER), str(tmp_path)])
    resumed = _curve(tmp_path)
    assert resumed[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(resumed[:, 1], single[:, 1], rtol=1e-6)


def test_torchrun_training_job_matches_one_process(repo_root, tmp_path):
    """`torchrun -m eo_fusion train` (2 gloo processes) on the chips of a one-process run."""
    import shutil

    import yaml

    cfg = yaml.safe_load((repo_root / "pipelines" / "train_landuse_sample.yaml").read_text())
    cfg["labels"]["path"] = str(repo_root / "catalogs/sample/data/slovenia/LULC.gpkg")
    cfg["sampling"] |= {"chip_size": 16, "chips_per_class": 2, "max_per_polygon": 1}
    cfg["training"] |= {
        "steps": 4,
        "batch_size": 4,
        "threads": 1,
        "device": "cpu",
        "pretrained": None,
        "checkpoint_every": 2,
    }
    runs = {}
    for name in ("one", "two"):
        cfg["out"] = str(tmp_path / name)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    _run([sys.executable, "-m", "eo_fusion", "train", str(tmp_path / "one.yaml")])
    (one,) = (tmp_path / "one").iterdir()
    two = tmp_path / "two" / one.name  # the same chips: the store hash ignores `out`
    shutil.copytree(one, two, ignore=shutil.ignore_patterns("train-*"))
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            "-m",
            "eo_fusion",
            "train",
            str(tmp_path / "two.yaml"),
        ]
    )
    for name, run in (("one", one), ("two", two)):
        (train_dir,) = run.glob("train-*")
        rows = (train_dir / "loss.csv").read_text().splitlines()[1:]
        runs[name] = np.array([float(r.split(",")[1]) for r in rows])
        report = json.loads((train_dir / "report.json").read_text())
        assert report["training"]["processes"] == (1 if name == "one" else 2)
    assert len(runs["one"]) == 4
    np.testing.assert_allclose(runs["two"], runs["one"], rtol=1e-4)
