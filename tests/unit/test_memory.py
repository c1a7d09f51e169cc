"""Memory given back between a run's phases: glibc's heap trim, GDAL's cache while products
are written; the garbage collector kept off imports."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eo_fusion.memory import return_freed_memory

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


_CHECK_CACHE = """
import ctypes, sys
from pathlib import Path
import pytest
from eo_fusion.pipeline import assemble as asm

def cache_max():
    path = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                if "libgdal" in line.rsplit("/", 1)[-1])
    lib = ctypes.CDLL(path)
    lib.GDALGetCacheMax64.restype = ctypes.c_int64
    return int(lib.GDALGetCacheMax64())

seen = []
def layer(*args, **kwargs):  # runs in assemble's writer threads
    seen.append(cache_max())
    raise RuntimeError("stop here")

asm._write_layer = layer
output = type("O", (), {"confidence": True, "probabilities": False})()
plan = type("Plan", (), {"output": output, "report": False, "run_dir": Path("/nonexistent")})()
before = cache_max()
with pytest.raises(RuntimeError, match="stop here"):
    asm.assemble(plan, None, [])
assert cache_max() == before, "the limit is restored afterwards"
assert seen == [asm.PRODUCTS_GDAL_CACHE_BYTES] * 2, seen
assert before > asm.PRODUCTS_GDAL_CACHE_BYTES
print("ok")
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/maps")
def test_products_are_written_with_a_bounded_gdal_cache():
    """In a fresh process, as the map job runs them. (In a process where other GDAL work ran
    first, rasterio's ``Env(GDAL_CACHEMAX=...)`` was seen not to change GDAL's limit: see the
    note on ``assemble.PRODUCTS_GDAL_CACHE_BYTES``.)"""
    done = subprocess.run(
        [sys.executable, "-c", _CHECK_CACHE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_imports_run_without_the_collector_and_are_frozen_after():
    code = (
        "import gc\n"
        "from eo_fusion.memory import frozen_imports\n"
        "before = gc.get_freeze_count()\n"
        "with frozen_imports():\n"
        "    assert not gc.isenabled()\n"
        "    made = [[i] for i in range(1000)]\n"
        "assert gc.isenabled() and gc.get_freeze_count() >= before + 1000\n"
        "gc.disable()\n"
        "with frozen_imports():\n"
        "    pass\n"
        "assert not gc.isenabled()  # left as the caller had it\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
