"""Explicit GDAL settings for every read (local files and HTTP(S) range reads via ``/vsicurl/``).

GDAL's own defaults suit a desktop, not a batch job: no HTTP timeout, no retry, and a directory
listing on every open. :class:`GDALOptions` fixes those with bounded, documented values. It is a
frozen, picklable dataclass: it travels with each dask task and every read applies it with
``rasterio.Env`` *inside* the task, so workers in other processes see the same settings (process
environment variables set on the client would not reach them). Reads are also bounded: a pixel
and byte budget per read, attempts and an overall deadline per read, and a minimum transfer speed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import rasterio


@dataclass(frozen=True)
class GDALOptions:
    """GDAL configuration options applied around each read.

    Attributes:
        http_timeout_s: seconds before one HTTP request is abandoned (GDAL default: none).
        http_connect_timeout_s: seconds to wait for a TCP/TLS connection.
        http_max_retry: retries of a failed HTTP request (GDAL default: 0).
        http_retry_delay_s: seconds before the first retry (GDAL doubles it each time).
        disable_readdir_on_open: ``EMPTY_DIR`` stops GDAL listing the remote "directory" of each
            file to look for sidecars (.aux.xml, .ovr): on object stores that listing is a slow,
            sometimes huge, extra request per open.
        allowed_extensions: only files with these extensions are opened through /vsicurl/, so a
            sidecar probe never turns into a request.
        merge_consecutive_ranges: merge adjacent byte ranges into one request (fewer round trips).
        multirange: ask for several ranges in one request when the server allows it.
        cache_max_bytes: GDAL block cache size in bytes (bounded so many workers fit in memory).
        num_threads: GDAL decoding threads per read (``1`` keeps dask's thread count meaningful).
        low_speed_limit_bps: with ``low_speed_time_s``: a transfer slower than this many bytes
            per second for that long is abandoned (a trickling server cannot hold a read).
        low_speed_time_s: see ``low_speed_limit_bps`` (``0`` turns the check off).
        max_read_pixels: most pixels (all bands) one window read may decode; larger reads are
            refused before decoding, naming the asset (:mod:`eo_fusion.sources.budget`).
        max_read_bytes: most decoded bytes (stored dtype plus the float32 copy) of one read.
        read_attempts: attempts per read for transient failures (timeouts, resets, 429/5xx,
            a cut transfer), each retry with GDAL's cache for that file cleared.
        read_deadline_s: overall seconds one read may take, all attempts together.
        extra: any other GDAL config options, passed as given (strings).
    """

    http_timeout_s: int = 30
    http_connect_timeout_s: int = 10
    http_max_retry: int = 3
    http_retry_delay_s: float = 0.5
    disable_readdir_on_open: str = "EMPTY_DIR"
    allowed_extensions: str = ".tif,.tiff,.TIF,.TIFF,.jp2,.vrt,.jpg,.jpeg,.png,.wld,.jgw,.tfw"
    merge_consecutive_ranges: bool = True
    multirange: bool = False
    cache_max_bytes: int = 256 * 1024 * 1024
    num_threads: int = 1
    low_speed_limit_bps: int = 1024
    low_speed_time_s: int = 20
    max_read_pixels: int = 2**28
    max_read_bytes: int = 4 * 2**30
    read_attempts: int = 3
    read_deadline_s: float = 300.0
    extra: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """The options as GDAL config keys (what ``rasterio.Env`` receives)."""
        cfg: dict[str, Any] = {
            "GDAL_HTTP_TIMEOUT": str(self.http_timeout_s),
            "GDAL_HTTP_CONNECTTIMEOUT": str(self.http_connect_timeout_s),
            "GDAL_HTTP_MAX_RETRY": str(self.http_max_retry),
            "GDAL_HTTP_RETRY_DELAY": str(self.http_retry_delay_s),
            "GDAL_DISABLE_READDIR_ON_OPEN": self.disable_readdir_on_open,
            "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": self.allowed_extensions,
            "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES" if self.merge_consecutive_ranges else "NO",
            "GDAL_HTTP_MULTIRANGE": "YES" if self.multirange else "NO",
            "GDAL_CACHEMAX": int(self.cache_max_bytes),
            "GDAL_NUM_THREADS": str(self.num_threads),
        }
        if self.low_speed_time_s > 0:
            cfg["GDAL_HTTP_LOW_SPEED_LIMIT"] = str(self.low_speed_limit_bps)
            cfg["GDAL_HTTP_LOW_SPEED_TIME"] = str(self.low_speed_time_s)
        cfg.update(self.extra)
        return cfg

    def env(self) -> rasterio.Env:
        """A ``rasterio.Env`` with these options; use as ``with opts.env(): ...``."""
        return rasterio.Env(**self.config())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for provenance attributes and logs)."""
        return asdict(self)
