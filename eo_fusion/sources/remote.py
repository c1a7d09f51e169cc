"""Remote reads that are safe and retried with sense: redirects checked, caches cleared.

* :func:`resolve_redirects`: GDAL's /vsicurl/ follows HTTP redirects without asking (GDAL 3.10
  has no option to stop it), so before GDAL opens an http(s) file the redirect chain is followed
  here with HEAD requests, each ``Location`` checked by
  :meth:`~eo_fusion.catalogs.safety.URLPolicy.for_hops_from` (a public URL may not lead to a
  private or metadata address), and GDAL opens the final URL. Cached per process for 5 minutes.
* :func:`read_with_retries`: runs one read attempt at a time through
  :func:`eo_fusion.retry.retry_call`; before a retry, GDAL is told not to reuse what it cached
  for that file (``CPL_VSIL_CURL_NON_CACHED``: a cut first transfer otherwise stays in the
  /vsicurl/ cache and every retry fails, or worse, "succeeds" with zeros); the final error names
  the asset and gives the fix for its cause.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from eo_fusion.errors import EOFusionError, ReadError
from eo_fusion.gdal import GDALOptions
from eo_fusion.retry import Verdict, classify, retry_call

T = TypeVar("T")

__all__ = ["read_with_retries", "resolve_all", "resolve_redirects"]

_VSICURL = "/vsicurl/"
_FINAL_TTL_S = 300.0
_finals: dict[str, tuple[float, str]] = {}
_finals_lock = threading.Lock()


def resolve_redirects(path: str, gdal: GDALOptions) -> str:
    """``/vsicurl/<final URL>`` for a ``/vsicurl/`` path whose URL redirects (every hop checked);
    any other path unchanged. Raises :class:`~eo_fusion.errors.UnsafeURLError` for a refused hop."""
    if not path.startswith(_VSICURL + "http"):
        return path
    url = path[len(_VSICURL) :]
    now = time.monotonic()
    with _finals_lock:
        hit = _finals.get(url)
    if hit and now - hit[0] < _FINAL_TTL_S:
        return _VSICURL + hit[1]
    import requests

    from eo_fusion.catalogs.http import final_url
    from eo_fusion.catalogs.safety import URLPolicy
    from eo_fusion.retry import DeadlineError

    try:
        final = final_url(url, URLPolicy.for_hops_from(url), timeout_s=gdal.http_timeout_s)
    except (requests.RequestException, DeadlineError):
        final = url  # no (timely) answer to HEAD: GDAL's own request reports the failure
    with _finals_lock:
        _finals[url] = (now, final)
    return _VSICURL + final


def _known(path: str, now: float) -> bool:
    with _finals_lock:
        hit = _finals.get(path[len(_VSICURL) :])
    return hit is not None and now - hit[0] < _FINAL_TTL_S


def resolve_all(paths: Iterable[str], gdal: GDALOptions, max_workers: int = 8) -> None:
    """:func:`resolve_redirects` for many paths at once (in threads), so that reading them one
    after another finds their final URLs known: a tile of 30 remote files otherwise waited for
    30 HEAD round trips in a row. A refused hop is left for the read of that file to raise
    (it names the asset)."""
    now = time.monotonic()
    todo = sorted({p for p in paths if p.startswith(_VSICURL + "http") and not _known(p, now)})
    if len(todo) < 2:
        return
    workers = min(max_workers, len(todo))
    with ThreadPoolExecutor(workers, thread_name_prefix="eo-fusion-head") as ex:
        for future in [ex.submit(resolve_redirects, p, gdal) for p in todo]:
            # A refused hop is raised again, with the asset's name, when the file is read.
            with contextlib.suppress(EOFusionError):
                future.result()


def read_with_retries(
    attempt: Callable[[dict[str, Any]], T], *, path: str, gdal: GDALOptions, what: str
) -> T:
    """Call ``attempt(extra_gdal_config)`` until it succeeds or fails for good (see module doc).

    Local files get one attempt (nothing transient about a local file); remote ones up to
    ``gdal.read_attempts`` within ``gdal.read_deadline_s``.
    """
    extra: dict[str, Any] = {}
    remote = path.startswith("/vsi")

    def again(n: int, verdict: Verdict) -> None:
        # From the second attempt on, GDAL must fetch this file afresh.
        extra["CPL_VSIL_CURL_NON_CACHED"] = path

    try:
        return retry_call(
            lambda: attempt(extra),
            attempts=gdal.read_attempts if remote else 1,
            deadline_s=gdal.read_deadline_s,
            backoff_s=gdal.http_retry_delay_s,
            before_retry=again,
        )
    except EOFusionError as e:
        from eo_fusion.sources.budget import ReadBudgetError

        if not isinstance(e, ReadError) or isinstance(e, ReadBudgetError):
            raise
        verdict = classify(e)
        tries = "after retries with GDAL's cache cleared" if verdict.transient else "(not retried)"
        raise ReadError(f"{e.message} [{verdict.reason}, {tries}]", fix=verdict.fix) from e
