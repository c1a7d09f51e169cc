"""Tile-level retries follow the read layer's rule (``eo_fusion.retry.classify``)."""

from __future__ import annotations

import errno

import pytest

from eo_fusion.errors import BadInputError, ReadError
from eo_fusion.files import StorageError
from eo_fusion.pipeline.execute import is_transient
from eo_fusion.retry import classify


class _HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status


def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TimeoutError("read timed out"), True),
        (OSError("connection reset by peer while reading B04"), True),
        (_HTTPError(503), True),
        (_HTTPError(429), True),
        (_HTTPError(404), False),
        # A read error is retried for its cause, not for being a read error.
        (_chained(ReadError("reading s2:B04 failed"), TimeoutError("timed out")), True),
        (ReadError("file x.tif (asset 'B04') has no CRS"), False),
        (OSError("x.tif: not recognized as being in a supported file format"), False),
        (ValueError("model exploded"), False),
    ],
)
def test_tile_retry_follows_the_read_rule(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
    assert classify(exc).transient is transient  # one rule for reads and tiles


@pytest.mark.parametrize(
    "exc",
    [
        BadInputError("band s2:B99 unknown"),
        StorageError("tiles/r000_c000.tif: disk full"),
        OSError(errno.ENOSPC, "No space left on device (timed out)"),
        _chained(StorageError("run folder read-only"), TimeoutError("timed out")),
    ],
)
def test_bad_input_and_storage_are_never_retried(exc: BaseException) -> None:
    assert not is_transient(exc)
