"""Memory given back between a run's phases: glibc's heap trim, GDAL's cache while products
are written."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import numpy as np
import pytest

from eo_fusion.memory import return_freed_memory
from eo_fusion.pipeline import assemble as asm

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@glibc
def test_freed_heap_goes_back_to_the_os():
    # 64 KB arrays come from malloc's heap (under its mmap threshold): freed, they stay
    # resident until the heap is trimmed.
    blocks = [np.ones(8192) for _ in range(1500)]  # ~94 MB
    blocks = blocks[1::2]  # free every other one: holes a plain free() cannot return
    before = _rss_kb()
    assert return_freed_memory()
    assert before - _rss_kb() > 30_000
    del blocks


def _gdal_cache_max() -> int:
    """GDAL's process-wide block cache limit, from the libgdal rasterio loaded."""
    path = next(
        line.split()[-1]
        for line in Path("/proc/self/maps").read_text().splitlines()
        if "libgdal" in line.rsplit("/", 1)[-1]
    )
    lib = ctypes.CDLL(path)
    lib.GDALGetCacheMax64.restype = ctypes.c_int64
    return int(lib.GDALGetCacheMax64())


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/maps")
def test_products_are_written_with_a_bounded_gdal_cache(monkeypatch):
    seen: list[int] = []

    def layer(*args, **kwargs):  # runs in assemble's writer threads
        seen.append(_gdal_cache_max())
        raise RuntimeError("stop here")

    monkeypatch.setattr(asm, "_write_layer", layer)
    plan = type("Plan", (), {"output": type("O", (), {"confidence": True,
                                                       "probabilities": False})(),
                             "report": False, "run_dir": Path("/nonexistent")})()  # fmt: skip
    before = _gdal_cache_max()
    with pytest.raises(RuntimeError, match="stop here"):
        asm.assemble(plan, None, [])  # type: ignore[arg-type]
    assert _gdal_cache_max() == before  # the limit is restored afterwards
    assert seen == [asm.PRODUCTS_GDAL_CACHE_BYTES] * 2
    assert before > asm.PRODUCTS_GDAL_CACHE_BYTES
