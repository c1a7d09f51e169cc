"""HTTP for catalogs: every hop checked by the URL policy, every search bounded by a deadline.

:class:`PolicySession` is a ``requests.Session`` that

* connects only to addresses the policy allows, resolved when the connection is made
  (:class:`PinnedAdapter`), so a name cannot be re-pointed between the check and the use;
* checks each request's URL with its :class:`~eo_fusion.catalogs.safety.URLPolicy` before a
  connection is made: the first URL, every link a STAC API hands out (pystac-client requests
  them through this session), and every redirect, whose ``Location`` is checked
  (:meth:`URLPolicy.check_redirect`) *before* it is followed; at most ``max_redirects`` hops;
* enforces an overall deadline (:meth:`start_deadline`) on top of the per-request timeouts: the
  request (urllib3's own retries included) runs in a worker thread that is waited for at most
  until the deadline, and the body is read in small pieces with the clock checked after each,
  so a server that trickles bytes cannot hold a search for ever.

:func:`final_url` follows the redirects of a URL with HEAD requests through the policy, for
clients (GDAL's /vsicurl/) that follow redirects without asking.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from eo_fusion.catalogs.safety import URLPolicy, redact_url
from eo_fusion.retry import DeadlineError

__all__ = ["PinnedAdapter", "PolicySession", "final_url"]

_READ_PIECE = 64 * 1024


class _PinnedConnection:
    """Mixin for urllib3 connections: resolve, check and connect to the checked address."""

    policy: URLPolicy
    _dns_host: str
    port: int

    def _new_conn(self) -> Any:
        name = self._dns_host
        self._dns_host = self.policy.connect_address(name, self.port)
        try:
            return super()._new_conn()  # type: ignore[misc]
        finally:
            self._dns_host = name  # TLS (SNI, certificate) keeps using the name


class PinnedAdapter(HTTPAdapter):
    """A requests adapter whose direct connections go only to addresses ``policy`` allows,
    resolved at connect time (connections through a configured proxy are the proxy's business).
    """

    def __init__(self, policy: URLPolicy, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        extra = {"policy": self.policy}
        http = type("PinnedHTTPConnection", (_PinnedConnection, HTTPConnection), extra)
        https = type("PinnedHTTPSConnection", (_PinnedConnection, HTTPSConnection), extra)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }


class PolicySession(requests.Session):
    """A session whose every request and redirect is checked by ``policy`` (see module doc)."""

    def __init__(
        self,
        policy: URLPolicy,
        *,
        what: str = "catalog",
        max_redirects: int = 5,
        max_retries: Any = 0,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.what = what
        self.max_redirects = max_redirects
        self._deadline: float | None = None
        adapter = PinnedAdapter(policy, max_retries=max_retries)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def start_deadline(self, seconds: float | None) -> None:
        """From now on, every request must finish within ``seconds`` in total (None: no limit)."""
        self._deadline = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        location = super().get_redirect_target(resp)
        if location:
            # Checked before requests builds the next request: a refused hop is never made.
            try:
                self.policy.check_redirect(resp.url, location, what=f"{self.what} redirect")
            except Exception:
                resp.close()
                raise
        return location

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.policy.check(str(request.url), what=self.what)
        left = self.remaining()
        if left is None:
            return super().send(request, **kwargs)
        if left <= 0:
            raise self._late(request)
        kwargs["timeout"] = _clip_timeout(kwargs.get("timeout"), left)
        wants_stream = bool(kwargs.get("stream"))
        kwargs["stream"] = True
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                resp = super(PolicySession, self).send(request, **kwargs)
                if not wants_stream:
                    _read_body(resp, self._deadline)
                box["resp"] = resp
            except BaseException as e:  # handed to the caller's thread
                box["err"] = e

        worker = threading.Thread(target=work, name="eo-fusion-http", daemon=True)
        worker.start()
        worker.join(timeout=max(0.0, left))
        if worker.is_alive():
            raise self._late(request)
        if "err" in box:
            raise box["err"]
        return box["resp"]  # type: ignore[no-any-return]

    def _late(self, request: requests.PreparedRequest) -> DeadlineError:
        return DeadlineError(
            f"{self.what}: {request.method} {redact_url(str(request.url))} ran past the "
            "overall deadline",
            fix="the server is too slow or trickling data; retry later or raise the deadline "
            "('search_deadline_s' in the catalog YAML)",
        )


def _clip_timeout(timeout: Any, left: float) -> Any:
    left = max(0.01, left)
    if timeout is None:
        return (left, left)
    if isinstance(timeout, tuple):
        return tuple(left if t is None else min(float(t), left) for t in timeout)
    return min(float(timeout), left)


def _read_body(resp: requests.Response, deadline: float | None) -> None:
    """Read the body in pieces (``read1``: whatever one receive returns), checking the clock."""
    pieces: list[bytes] = []
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineError(
                    f"reading {redact_url(resp.url)} ran past the overall deadline "
                    f"({sum(map(len, pieces))} bytes received)",
                    fix="the server is trickling data; retry later or raise the deadline",
                )
            piece = resp.raw.read1(_READ_PIECE, decode_content=True)
            if not piece:
                break
            pieces.append(piece)
    except BaseException:
        resp.close()
        raise
    resp._content = b"".join(pieces)
    resp._content_consumed = True


def final_url(
    url: str, policy: URLPolicy, *, timeout_s: float = 10.0, max_redirects: int = 5
) -> str:
    """Where ``url`` ends up after its redirects (HEAD requests, each hop checked by
    ``policy``); ``url`` itself when the server does not redirect or does not answer HEAD."""
    session = PolicySession(policy, what="asset", max_redirects=max_redirects)
    session.start_deadline(timeout_s * (max_redirects + 1))
    try:
        resp = session.head(url, allow_redirects=True, timeout=(timeout_s, timeout_s))
    except requests.TooManyRedirects as e:  # before RequestException, its base class
        from eo_fusion.errors import UnsafeURLError

        raise UnsafeURLError(
            f"asset URL {redact_url(url)} redirects more than {max_redirects} times",
            fix="point the asset at its final location",
        ) from e
    finally:
        session.close()
    return str(resp.url) if resp.history else url
