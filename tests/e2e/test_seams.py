"""No seams: the same predictor over the same area with two tile sizes gives the same map."""

from __future__ import annotations

from _synthetic_job import read_product, synthetic_job

from eo_fusion.pipeline.run import run_job
from eo_fusion.testing.synthetic import SyntheticPredictor

# Synthetic predictor: each pixel depends on its neighbourhood within `radius` pixels, as a
# convolutional/windowed model's output does; a halo of at least that width must remove seams.
PRED = SyntheticPredictor(radius=3)


def _map(tmp_path, tile_size, halo):
    job = synthetic_job(tmp_path / f"t{tile_size}h{halo}", size_px=100, tile_size=tile_size,
                        halo=halo)  # fmt: skip
    return read_product(run_job(job, predictor=PRED, items={}))


def test_two_tile_sizes_agree_with_halo(tmp_path):
    a, b = _map(tmp_path, 24, 4), _map(tmp_path, 40, 4)
    agree = float((a == b).mean())
    assert agree >= 0.999, f"only {agree:.4%} of pixels agree between tile sizes 24 and 40"


def test_without_halo_the_seams_show(tmp_path):
    # The control: the same comparison without a halo must fail, or the test above proves nothing.
    a, b = _map(tmp_path, 24, 0), _map(tmp_path, 40, 0)
    assert float((a == b).mean()) < 0.999
