"""Which errors are worth retrying, and a retry loop that means it.

:func:`classify` sorts an exception (and the chain of causes behind it) into **transient**
(timeouts, connection resets and drops, HTTP 408/425/429/5xx: the same request may work later)
or **permanent** (HTTP 4xx such as 404/403, a corrupt or truncated file, not a raster, a URL the
policy refuses: retrying cannot help). Each verdict carries a fix that fits the cause.

:func:`retry_call` retries only transient failures, with exponential backoff, a cap on the
number of attempts *and* an overall deadline; before each retry it calls ``before_retry``
(the reader uses it to make GDAL forget what it cached for that URL: a truncated first answer
otherwise stays in GDAL's /vsicurl/ cache and every retry fails at once).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from eo_fusion.errors import EOFusionError, ReadError, UnsafeURLError

T = TypeVar("T")

__all__ = [
    "DeadlineError",
    "IncompleteReadError",
    "Verdict",
    "causes",
    "classify",
    "find_cause",
    "retry_call",
]


class DeadlineError(EOFusionError):
    """An operation (a search, a read) ran past its overall deadline."""


class IncompleteReadError(ReadError):
    """GDAL got less data than it asked for (a cut transfer, or a truncated/corrupt file)."""


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`classify`.

    Attributes:
        transient: retrying the same request may succeed.
        retry_once: worth exactly one more try (data came back incomplete: a cut transfer
            heals on a fresh fetch, a damaged file does not).
        reason: short name of the cause (``timeout``, ``http 404``, ``corrupt file``...).
        fix: what the user can do about it.
    """

    transient: bool
    reason: str
    fix: str
    retry_once: bool = False


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it (``__cause__``/``__context__``), each once."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


E = TypeVar("E", bound=BaseException)


def find_cause(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of type ``kind`` in ``exc``'s chain, if any."""
    return next((c for c in causes(exc) if isinstance(c, kind)), None)


_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# GDAL/curl/requests wording of HTTP statuses and network failures.
_STATUS_RE = re.compile(
    r"(?:HTTP (?:response|error) code\s*:?\s*|status(?: code)?[ =:]+|\b)(\d{3})\b"
    r"(?= (?:Client|Server) Error|\s*$|[^\d])",
    re.IGNORECASE,
)
_HTTP_CODE_RE = re.compile(r"HTTP (?:response |error )?code\s*:?\s*(\d{3})", re.IGNORECASE)
_NETWORK_WORDS = (
    "timed out", "timeout", "connection reset", "connection aborted", "connection refused",
    "broken pipe", "remote end closed", "transfer closed", "connection was closed",
    "incomplete read", "incompleteread", "chunkedencodingerror", "protocolerror",
    "couldn't connect", "could not connect", "temporary failure in name resolution",
    "operation too slow", "recv failure", "send failure", "empty reply",
    "response ended prematurely", "connection broken",
)  # fmt: skip
_CORRUPT_WORDS = (
    "not recognized as being in a supported file format", "not recognized as a supported",
    "tiffreaddirectory", "tifffilltile", "tifffillstrip", "ireadblock failed",
    "read error", "truncated", "corrupt", "not a tiff", "cannot read tiff header",
    "jpeglib", "decod", "invalid json", "expecting value", "unterminated", "jsondecodeerror",
)  # fmt: skip


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    if isinstance(code, int):
        return code
    m = _HTTP_CODE_RE.search(str(exc))
    return int(m.group(1)) if m else None


def _http_verdict(status: int) -> Verdict:
    if status in _TRANSIENT_STATUS:
        why = "the server is rate-limiting" if status == 429 else "the server had a failure"
        return Verdict(True, f"http {status}", f"{why}; retry later or lower the request rate")
    if status in (401, 403):
        return Verdict(
            False, f"http {status}", "access denied: check credentials/signing for this catalog"
        )
    if status in (404, 410):
        return Verdict(False, f"http {status}", "the file is gone: refresh the catalog items")
    return Verdict(False, f"http {status}", "the server refused the request; check the URL")


def classify(exc: BaseException) -> Verdict:
    """Transient or permanent, with a reason and a fix (see the module docstring)."""
    for c in causes(exc):
        if isinstance(c, IncompleteReadError):
            return Verdict(True, "incomplete data", c.fix or "retry", retry_once=True)
        if isinstance(c, UnsafeURLError):
            return Verdict(False, "refused by the URL policy", c.fix or "fix the URL")
        if isinstance(c, DeadlineError):
            return Verdict(False, "deadline", c.fix or "raise the deadline or retry later")
        status = _status_of(c)
        if status is not None and status >= 400:
            return _http_verdict(status)
        if isinstance(c, TimeoutError | socket.timeout | ConnectionError):
            return Verdict(True, "network", "the connection failed; check the network, retry")
    # Our own errors by their message only: their fix text ("raise the timeouts") is advice, not
    # a symptom.
    text = " ".join(
        f"{type(c).__name__}: {c.message if isinstance(c, EOFusionError) else c}"
        for c in causes(exc)
    ).lower()
    if "range downloading not supported" in text:
        return Verdict(
            False, "server ignores byte ranges",
            "serve the file from a range-capable server (object store, `eo-fusion catalog "
            "serve`) or download it and use a local catalog",
        )  # fmt: skip
    if any(w in text for w in _NETWORK_WORDS):
        return Verdict(True, "network", "the connection failed or stalled; retry later")
    if "does not exist" in text or "no such file" in text:
        return Verdict(False, "missing", "the file does not exist (HTTP 404?): check the href")
    if any(w in text for w in _CORRUPT_WORDS):
        return Verdict(
            False, "corrupt or truncated file",
            "the file is damaged or not a raster: re-download or rebuild it; retrying won't help",
        )  # fmt: skip
    return Verdict(False, "unexpected", "see the message; retrying the same request won't help")


def retry_call(
    fn: Callable[[], T],
    *,
    attempts: int,
    deadline_s: float,
    backoff_s: float = 0.5,
    before_retry: Callable[[int, Verdict], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, a failure is permanent, ``attempts`` are used up or the
    deadline (seconds from now) has passed; re-raises the last error.

    ``before_retry(attempt, verdict)`` runs before each new attempt (clear caches there).
    """
    t_end = time.monotonic() + deadline_s
    attempt = 0
    once_used: set[str] = set()
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            verdict = classify(exc)
            delay = backoff_s * (2 ** (attempt - 1))
            out_of_time = time.monotonic() + delay >= t_end
            spent = verdict.retry_once and verdict.reason in once_used
            if not verdict.transient or spent or attempt >= attempts or out_of_time:
                raise
            if verdict.retry_once:
                once_used.add(verdict.reason)
            if before_retry is not None:
                before_retry(attempt, verdict)
            sleep(delay)
