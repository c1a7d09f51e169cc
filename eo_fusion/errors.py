"""The eo-fusion exception hierarchy.

Every error raised on purpose by eo-fusion derives from :class:`EOFusionError`. Messages follow one
shape: *what* went wrong, *which object* (item id, asset key, URL, tile, file) and *how to fix it*.
The CLI prints ``str(error)`` as a single line and maps :attr:`EOFusionError.exit_code` to the
process exit status (1: the job failed, 2: bad input or usage).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class EOFusionError(Exception):
    """Root of all eo-fusion errors.

    Args:
        message: what went wrong, naming the object involved.
        fix: what the user can do about it (shown after the message).
    """

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message)

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message} — fix: {self.fix}"
        return self.message


class BadInputError(EOFusionError):
    """The user's input (config, arguments, files) is invalid; exit code 2."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInputError):
    """A job, catalog or model configuration file is invalid."""


class CatalogError(EOFusionError):
    """A catalog could not be opened or searched."""


class SearchError(CatalogError):
    """A STAC search failed (after retries) or returned something unusable."""


class UnsafeURLError(BadInputError):
    """An asset or catalog URL is not allowed (scheme, host, private address)."""


class BandError(BadInputError):
    """A band/asset cannot be placed in the band registry, or a requested band is unknown."""


class GridError(BadInputError):
    """An AOI, CRS, resolution or tiling request cannot produce a valid grid."""


class ReadError(EOFusionError):
    """Reading pixels of an asset failed."""


class CoregistrationError(EOFusionError):
    """A co-registration estimate or correction failed."""


class ModelError(EOFusionError):
    """A model could not be built, trained or run."""


class CheckpointError(ModelError):
    """A checkpoint or model card is missing, corrupt or incompatible."""


class JobError(EOFusionError):
    """A batch job failed as a whole."""


class TileError(JobError):
    """A single tile of a job failed."""


class ProductError(JobError):
    """Writing or validating an output product (COG, STAC, report) failed."""


class LockError(JobError):
    """Another copy of the same job holds the run lock."""
