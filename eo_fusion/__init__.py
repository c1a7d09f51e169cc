"""eo-fusion: multi-sensor Earth-observation fusion, from STAC catalogs to COG map products."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eo-fusion")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
