"""A real `dask scheduler` + two `dask worker` processes give the same map as a LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest
from _synthetic_job import read_product, synthetic_job

from eo_fusion.pipeline.manifest import RunManifest
from eo_fusion.pipeline.run import run_job
from eo_fusion.testing.synthetic import SyntheticPredictor


def test_scheduler_result_equals_local_cluster(tmp_path, dask_scheduler):
    pred = SyntheticPredictor()
    local = run_job(synthetic_job(tmp_path / "local"), predictor=pred, items={})
    remote = run_job(
        synthetic_job(tmp_path / "remote"), predictor=pred, items={}, scheduler=dask_scheduler
    )
    assert local.ok and remote.ok and remote.tiles_done == local.tiles_done == 9
    for name in ("classes", "confidence"):
        np.testing.assert_array_equal(read_product(remote, name), read_product(local, name))
    # The tiles really ran on the two external workers, not in this process.
    workers = {rec.worker for rec in RunManifest.load(remote.run_dir).tiles.values()}
    assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)


def test_a_connected_client_can_be_passed_and_stays_open(tmp_path, dask_scheduler):
    # How Dask Gateway / dask-jobqueue / dask-kubernetes clusters are used from Python.
    from distributed import Client

    pred = SyntheticPredictor()
    local = run_job(synthetic_job(tmp_path / "local"), predictor=pred, items={})
    with Client(dask_scheduler) as client:
        s = run_job(synthetic_job(tmp_path / "client"), predictor=pred, items={}, scheduler=client)
        assert client.status == "running"  # not closed by run_job
    np.testing.assert_array_equal(read_product(s), read_product(local))


def test_local_worker_processes_keep_glibcs_adaptive_malloc(monkeypatch):
    """LocalCluster worker processes start without distributed's MALLOC_TRIM_THRESHOLD_ (it
    turns glibc's adaptive mmap threshold off: 21 s of page faults in a 53 s job), even when
    an earlier nanny of this process left it in os.environ; the rest of dask's worker
    environment is kept, and so is this process's own environment afterwards."""
    import os

    from eo_fusion.config import DaskSpec
    from eo_fusion.pipeline.execute import dask_client

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what a nanny leaves behind
    spec = DaskSpec(workers=1, threads_per_worker=1, processes=True)
    with dask_client(spec) as client:
        env = next(iter(client.run(lambda: dict(os.environ)).values()))
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    # dask's value, unless this process's own environment sets one (`make test` sets 2).
    assert env.get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS", "1")
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"


@pytest.mark.parametrize("processes", [False, True])
def test_private_cluster_workers_run_without_the_statistical_profiler(processes):
    """A job's own LocalCluster workers (threads or processes) do not sample their threads'
    stacks every 10 ms for a dashboard nobody opens; a cluster made afterwards is untouched."""
    import dask

    from eo_fusion.config import DaskSpec
    from eo_fusion.pipeline.execute import dask_client

    def settings(dask_worker):
        interval = dask.config.get("distributed.worker.memory.monitor-interval")
        return "profile" in dask_worker.periodic_callbacks, interval

    spec = DaskSpec(workers=1, threads_per_worker=1, processes=processes)
    with dask_client(spec) as client:
        (profiling, interval), *_ = client.run(settings).values()
    assert not profiling and interval == "500ms"
    assert dask.config.get("distributed.worker.profile.enabled") is True


def test_worker_processes_start_early_with_the_tile_modules_imported():
    """A run's worker processes are started while the job is still being planned, and each
    imports torch and the model code when it starts (the preload), not in its first tile."""
    import sys

    from eo_fusion.config import DaskSpec
    from eo_fusion.pipeline.execute import close_unused, dask_client, start_worker_processes

    assert start_worker_processes(DaskSpec(processes=False)) is None  # threads: nothing to do
    assert start_worker_processes(DaskSpec(processes=True), "tcp://127.0.0.1:1") is None
    spec = DaskSpec(workers=1, threads_per_worker=1, processes=True)
    starting = start_worker_processes(spec)
    assert starting is not None
    with dask_client(spec, None, starting) as client:
        loaded = client.run(lambda: [m in sys.modules for m in ("torch", "eo_fusion.stack")])
        assert list(loaded.values()) == [[True, True]]
    assert starting.result().status.name == "closed"
    unused = start_worker_processes(spec)  # a run that stops before its tiles
    close_unused(unused)
    assert unused is not None and unused.result().status.name == "closed"
