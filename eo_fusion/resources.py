"""Files that ship with the library, found through :mod:`importlib.resources`.

Everything eo-fusion needs at run time besides the user's job is package data of ``eo_fusion``
under ``eo_fusion/data/``, so a wheel installed anywhere works from any folder:

* ``data/catalogs/``: the named catalog definitions (``<name>.yaml``) and the embedded sample
  catalog (``sample/``). In the repository this is a relative symlink to the top-level
  ``catalogs/`` folder, which stays where people look for it; the wheel carries the files.
* ``data/model/``: the bundled model (safetensors + model card).
* ``data/jobs/``: starter job files that ``eo-fusion init`` copies into a folder.

Paths here are real folders on disk (GDAL and rasterio read files, not zip members); an
install where they are not (a zipped package) is refused with a clear error.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from eo_fusion.errors import BadInputError, ConfigError

__all__ = ["BUNDLED_MODEL_DIR", "CATALOGS_DIR", "JOBS_DIR", "copy_starter_jobs", "shipped"]


def shipped(*parts: str) -> Path:
    """Path of ``eo_fusion/data/<parts...>`` in the installed package (not checked to exist)."""
    return Path(str(files("eo_fusion").joinpath("data", *parts)))


def require(path: Path, what: str) -> Path:
    """``path`` if it exists, else a :class:`ConfigError` naming ``what`` and the fix."""
    if not path.exists():
        raise ConfigError(
            f"{what} is missing from the installed eo_fusion package ({path})",
            fix="reinstall eo-fusion (`pip install eo-fusion` or, in a clone, `pip install -e .`);"
            " a Windows clone needs `git config core.symlinks true` before checkout",
        )
    return path


#: Named catalog definitions and the embedded sample catalog (``catalogs/`` in the repository).
CATALOGS_DIR = shipped("catalogs")
#: The bundled model (``load_model()`` with no argument).
BUNDLED_MODEL_DIR = shipped("model")
#: Starter job files for ``eo-fusion init``.
JOBS_DIR = shipped("jobs")


def copy_starter_jobs(folder: Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the starter job files into ``folder`` (created if needed); returns the written paths.

    The jobs name their catalog ("sample") and give their AOI inline, so they run from
    ``folder`` with nothing else copied; their outputs go to ``folder/out/``. An existing file is
    never replaced unless ``overwrite`` is set (a user may have edited it).
    """
    sources = sorted(require(JOBS_DIR, "the starter job files").glob("*.yaml"))
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise BadInputError(f"{folder} is a file, not a folder", fix="give a folder to write to")
    clash = [folder / src.name for src in sources if (folder / src.name).exists()]
    if clash and not overwrite:
        raise BadInputError(
            f"{', '.join(str(p) for p in clash)} already exist(s)",
            fix="pick another folder, or pass --force to replace the file(s)",
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sources:
        dest = folder / src.name
        dest.write_bytes(src.read_bytes())
        written.append(dest)
    return written
