"""Atomic writes leave recognisable temporaries; storage errors name the path and the fix."""

from __future__ import annotations

import errno

import pytest

from eo_fusion.files import (
    StorageError,
    atomic_output,
    atomic_write_text,
    remove_stale_partials,
    storage_error,
    storage_errors,
)


def test_temporaries_of_killed_writes_are_recognised_and_removed(tmp_path):
    seen = []
    with atomic_output(tmp_path / "tile.tif", ".tmp.tif") as tmp:
        seen.append(tmp.name)
        (tmp_path / "sub").mkdir()
        # What a killed process leaves: this temporary and those of other writes.
        (tmp_path / "sub" / ".manifest.json.x1.partial.tmp").write_text("{")
        (tmp_path / "sub" / ".m_classes.mosaic.partial.tif.aux.xml").write_text("<")
        assert sorted(p.name for p in remove_stale_partials(tmp_path)) == sorted(
            [tmp.name, ".manifest.json.x1.partial.tmp", ".m_classes.mosaic.partial.tif.aux.xml"]
        )
        tmp.write_bytes(b"new")  # the writer recreates it (in real runs the lock prevents this)
    assert seen[0].startswith(".tile.tif.") and seen[0].endswith(".partial.tmp.tif")
    atomic_write_text(tmp_path / "kept.json", "{}")
    (tmp_path / "notes.tmp.txt").write_text("not ours: no leading dot")
    assert remove_stale_partials(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kept.json", "notes.tmp.txt", "sub", "tile.tif"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, r"no space left on device; about 3\.0 MiB needed, .* MiB free"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "permission denied"),
    ],
)
def test_storage_errors_name_the_path(tmp_path, code, words):
    target = tmp_path / "run" / "manifest.json"
    with (
        pytest.raises(StorageError, match=rf"cannot write {target}: {words}") as info,
        storage_errors(tmp_path / "run", needed_bytes=3 * 2**20),
    ):
        raise OSError(code, "simulated", str(target))
    assert info.value.fix and info.value.exit_code == 1
    assert isinstance(info.value.__cause__, OSError)


def test_other_os_errors_pass_through(tmp_path):
    assert storage_error(OSError(errno.EIO, "io"), tmp_path) is None
    with pytest.raises(FileNotFoundError), storage_errors(tmp_path):
        raise FileNotFoundError(errno.ENOENT, "gone")
