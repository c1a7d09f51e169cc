"""Smoke test of the inference benchmark: peaks per precision, encoder share, min/median/max."""

from __future__ import annotations

import pytest
import torch

bench = pytest.importorskip("benchmarks.bench_inference")


def test_matmul_peak_is_the_best_shape_and_flops_are_counted():
    cpu = torch.device("cpu")
    peak, shape = bench.matmul_peak(torch.float32, cpu, [(64, 64, 64), (256, 256, 256)], 3)
    assert peak > 0 and shape in ((64, 64, 64), (256, 256, 256))
    assert bench.spread([3.0, 1.0, 2.0]) == "1 / 2 / 3"


def test_benchmark_prints_each_precision_against_its_own_peak(capsys):
    assert bench.main(["--size", "40", "--batch", "2", "--repeat", "3"]) == 0
    out = capsys.readouterr().out
    assert "load average" in out and "load average after" in out
    rows = [ln for ln in out.splitlines() if ln.startswith(("fp32 ", "bf16 "))]
    assert rows[0].startswith("fp32")
    assert len(rows) == (2 if bench._precisions(torch.device("cpu"))[-1] == "bf16" else 1)
    assert "fp32: encoder share of its precision's matmul peak: eager" in out
    with pytest.raises(SystemExit):
        bench.main(["--repeat", "2"])
