"""Lazy chunks written into one buffer: the compute returns it without a concatenated copy, and
never hands the same buffer out twice."""

from __future__ import annotations

import pickle

import dask
import dask.array as da
import numpy as np
import pytest

from eo_fusion import chunk_buffers
from eo_fusion.chunk_buffers import OutputBuffer, buffered, new_buffers, new_token

IN_PLACE: list[bool] = []  # how each chunk task found its buffer


def _values(y: slice, x: slice) -> np.ndarray:
    yy, xx = np.mgrid[y, x]
    return np.stack([yy * 100 + xx, -(yy * 100 + xx)]).astype("float32")


def _chunk(buffers: dict[str, OutputBuffer], y: slice, x: slice) -> np.ndarray:
    IN_PLACE.append(buffers["a"].in_place)
    return buffers["a"].write((Ellipsis, y, x), _values(y, x))


def _unreadable(buffers: dict[str, OutputBuffer], y: slice, x: slice) -> np.ndarray:
    raise OSError("unreadable chunk")


def _lazy(shape=(7, 10), size=4, chunk=_chunk) -> da.Array:
    """A (2, *shape) array in size x size chunks, built as api.stack builds its chunks."""
    token = new_token()
    buffers = dask.delayed(new_buffers, pure=False)({"a": (token, (2, *shape), "float32")})
    rows = []
    for y0 in range(0, shape[0], size):
        row = []
        for x0 in range(0, shape[1], size):
            y, x = slice(y0, min(y0 + size, shape[0])), slice(x0, min(x0 + size, shape[1]))
            part = dask.delayed(chunk)(buffers, y, x)
            row.append(da.from_delayed(part, (2, y.stop - y.start, x.stop - x.start), "float32"))
        rows.append(row)
    return buffered(da.block([rows]), token)


@pytest.fixture
def no_concatenation(monkeypatch):
    calls = []

    def counting(results):
        calls.append(1)
        return dask.array.core.finalize(results)

    monkeypatch.setattr(chunk_buffers, "concatenating_finalize", counting)
    IN_PLACE.clear()
    return calls


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_compute_returns_the_buffer_the_chunks_were_written_into(scheduler, no_concatenation):
    arr = _lazy()
    out = arr.compute(scheduler=scheduler)
    np.testing.assert_array_equal(out, _values(slice(0, 7), slice(0, 10)))
    assert out.base is None and out.flags.c_contiguous
    assert no_concatenation == [] and IN_PLACE == [True] * 6
    assert not chunk_buffers._WANTED


def test_every_compute_gets_its_own_buffer(no_concatenation):
    arr = _lazy()
    first = arr.compute()
    first[:] = 0  # the user's array is theirs: the next compute must not see (or share) it
    second = arr.compute()
    np.testing.assert_array_equal(second, _values(slice(0, 7), slice(0, 10)))
    assert not np.shares_memory(first, second)
    assert no_concatenation == []


def test_a_buffer_is_handed_out_once(no_concatenation):
    arr = _lazy()
    # Another collection whose chunks are the very same views (an identity map over them):
    # both would otherwise return the one buffer, and writing to one result would change the other.
    same = buffered(arr.map_blocks(lambda block: block, dtype=arr.dtype), arr.buffer_token)
    a, b = dask.compute(arr, same)
    assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, b)
    assert len(no_concatenation) == 1


def test_chunks_from_other_processes_are_concatenated():
    # The buffer task runs in another process, where no buffer was asked for: chunks are
    # copies, and dask concatenates them (values must not suffer).
    arr = _lazy()
    out = arr.compute(scheduler="processes", num_workers=2)
    np.testing.assert_array_equal(out, _values(slice(0, 7), slice(0, 10)))
    assert arr.buffer_token in chunk_buffers._WANTED  # never taken here ...
    del arr
    assert not chunk_buffers._WANTED  # ... and dropped with the array


def test_operations_on_a_buffered_array_compute_the_ordinary_way(no_concatenation):
    arr = _lazy()
    part = arr[:, 2:5, 3:9]
    assert type(part) is da.Array
    np.testing.assert_array_equal(part.compute(), _values(slice(2, 5), slice(3, 9)))
    assert float((arr * 2).sum().compute()) == 0.0  # the two planes cancel
    assert not any(IN_PLACE)  # chunk by chunk, each its own array, as dask does


def test_storing_streams_chunk_by_chunk(no_concatenation):
    # da.store (to_zarr) must not gather the chunks into one buffer: a stack larger than
    # memory is written chunk by chunk.
    target = np.zeros((2, 7, 10), "float32")
    da.store(_lazy(), target)
    np.testing.assert_array_equal(target, _values(slice(0, 7), slice(0, 10)))
    assert IN_PLACE == [False] * 6


def test_a_buffer_pickles_without_its_data():
    buf = OutputBuffer((2, 1000, 1000), "float32", in_place=True)
    buf.write((Ellipsis, slice(0, 10), slice(0, 10)), np.ones((2, 10, 10)))
    copy = pickle.loads(pickle.dumps(buf))
    assert len(pickle.dumps(buf)) < 1000
    assert (copy.shape, copy.dtype) == ((2, 1000, 1000), np.dtype("float32"))
    assert not copy.in_place  # another process never assembles the result
    chunk = copy.write((Ellipsis, slice(0, 1), slice(0, 1)), np.full((2, 1, 1), 3.0))
    assert chunk.dtype == np.float32 and float(chunk.sum()) == 6.0


def test_a_failed_compute_leaves_no_request_behind():
    with pytest.raises(OSError, match="unreadable"):
        _lazy(chunk=_unreadable).compute()
    assert not chunk_buffers._WANTED  # a later store of the same array streams


def test_a_distributed_cluster_in_this_process_gets_the_buffer(no_concatenation):
    # Client(processes=False), as in a notebook: the workers are threads of this process.
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        host="127.0.0.1",
        protocol="tcp://",  # inproc would probe an outside address for this host's IP
        dashboard_address="127.0.0.1:0",
    )
    with cluster, Client(cluster):
        out = _lazy().compute()
    np.testing.assert_array_equal(out, _values(slice(0, 7), slice(0, 10)))
    assert IN_PLACE == [True] * 6 and no_concatenation == []
