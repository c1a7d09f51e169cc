"""The STAC API backend of searches: pystac-client behind the URL policy, bounded in every way.

Network behaviour of STAC API searches (all bounded, all set per catalog in its YAML):

* explicit connect/read timeouts on every request;
* retries with exponential backoff on connection errors, 429 and 5xx, for GET and POST
  (``Retry-After`` honoured but capped);
* at most ``max_pages`` pages and ``item_cap`` items (the result is then marked ``truncated``
  and a warning logged); a ``next`` link seen twice, or a page that repeats only items already
  seen, is a paging loop and raises :class:`SearchError`;
* one overall deadline per search (``search_deadline_s``: all pages, retries and trickling
  bodies included), on top of the per-request timeouts;
* every request goes through :class:`~eo_fusion.catalogs.http.PolicySession`: the root URL,
  every link the API returns (``search``, ``next``, ``self``) and every redirect hop are checked
  by :func:`api_policy` before they are followed (declared hosts only, or the API's own host).

Filters: ``bbox``/``intersects``, ``datetime``, collections and ids go to the API; cloud cover and
property filters go as CQL2-JSON when the API conforms to the Filter extension, as ``query``
when it supports the Query extension, and are always re-checked client-side. Items without
``eo:cloud_cover`` do not pass a ``max_cloud`` filter (as on a STAC API).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pystac

from eo_fusion.catalogs.diagnostics import SkippedItem, drop_feature_problems, screen_item
from eo_fusion.catalogs.providers import CatalogSpec
from eo_fusion.catalogs.query import SearchQuery, iso_instant, modality_ok
from eo_fusion.catalogs.safety import URLPolicy, check_url, redact_text, redact_url
from eo_fusion.errors import EOFusionError, SearchError, UnsafeURLError
from eo_fusion.retry import DeadlineError, classify, find_cause

log = logging.getLogger("eo_fusion.catalogs.search")

__all__ = ["api_policy", "api_search", "open_client"]

_RETRY_STATUS = (429, 500, 502, 503, 504)
_MAX_RETRY_AFTER_S = 30.0  # a server asking for longer gets this, then the retry budget ends


def _retry(spec: CatalogSpec) -> Any:
    from urllib3.util.retry import Retry

    class _CappedRetry(Retry):
        def get_retry_after(self, response: Any) -> float | None:
            value = super().get_retry_after(response)
            return None if value is None else min(value, _MAX_RETRY_AFTER_S)

    return _CappedRetry(
        total=spec.retries,
        connect=spec.retries,
        read=spec.retries,
        status=spec.retries,
        backoff_factor=spec.backoff_s,
        status_forcelist=_RETRY_STATUS,
        allowed_methods=frozenset({"GET", "POST"}),  # STAC searches are POSTs; they are safe
        respect_retry_after_header=True,
        raise_on_status=True,
    )


def _stac_io(spec: CatalogSpec) -> Any:
    """pystac-client I/O whose every request, link and redirect goes through the API policy."""
    from pystac_client.stac_api_io import StacApiIO

    from eo_fusion.catalogs.http import PolicySession

    policy = api_policy(spec)

    class _CheckedStacApiIO(StacApiIO):
        def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
            # Links (search, next, self...) are checked before pystac-client follows them, also
            # the ones it would open as local files.
            href = source.to_dict()["href"] if hasattr(source, "to_dict") else str(source)
            policy.check(str(href), what=f"catalog '{spec.name}' link")
            return str(super().read_text(source, *args, **kwargs))

    timeout = (spec.timeout_s, spec.timeout_s)
    io = _CheckedStacApiIO(timeout=timeout, max_retries=None)
    io.session = PolicySession(policy, what=f"catalog '{spec.name}'", max_retries=_retry(spec))
    return io


def open_client(spec: CatalogSpec, io: Any = None) -> Any:
    """A pystac-client Client with the catalog's timeouts, retry policy and URL policy."""
    from pystac_client import Client

    assert spec.url
    check_url(spec.url, api_policy(spec), what=f"catalog '{spec.name}'")
    io = io or _stac_io(spec)
    try:
        return Client.open(spec.url, stac_io=io, timeout=(spec.timeout_s, spec.timeout_s))
    except Exception as e:
        raise _search_error(spec, e, f"cannot open {redact_url(spec.url)}") from e


def api_policy(spec: CatalogSpec) -> URLPolicy:
    """The policy for a STAC API's root URL and every link it returns: https (http too when the
    catalog is declared local), and only the declared hosts, or the API's own host when the
    catalog declares none. Local files are never followed."""
    from urllib.parse import urlsplit

    hosts = tuple(spec.allowed_hosts) or (urlsplit(spec.url or "").hostname or "",)
    schemes = frozenset({"https", "http"} if spec.local else {"https"})
    return URLPolicy(schemes, hosts, spec.local, ())


def _search_error(spec: CatalogSpec, e: BaseException, where: str) -> EOFusionError:
    """The error to raise for a failed API request: the policy's own refusal, a deadline, or a
    SearchError whose fix fits the cause."""
    refused = find_cause(e, UnsafeURLError)
    if refused is not None:
        return refused
    if find_cause(e, DeadlineError) is not None:
        return SearchError(
            f"catalog '{spec.name}': {where}: the search ran past its overall deadline of "
            f"{spec.search_deadline_s:g} s",
            fix="the API is too slow or trickling data; retry later or raise "
            "'search_deadline_s' in the catalog YAML",
        )
    verdict = classify(e)
    retried = (
        f"{spec.retries} retries with backoff were already made (timeouts {spec.timeout_s:g} s)"
    )
    if verdict.transient:
        fix = f"retry later; {retried}"
    elif verdict.reason.startswith("http 4"):
        fix = (
            f"the API refused the request ({verdict.reason}): check the catalog URL, the "
            "collection ids and any credentials"
        )
    else:
        fix = verdict.fix
    return SearchError(
        f"catalog '{spec.name}': {where}: {type(e).__name__}: {redact_text(str(e))[:300]}",
        fix=fix,
    )


def _page_items(
    feats: list[dict[str, Any]],
    keys: list[tuple[Any, Any]],
    seen_ids: set[tuple[Any, Any]],
    query: SearchQuery,
    skipped: list[SkippedItem],
) -> list[pystac.Item]:
    """The items of one page that match ``query``; broken ones go to ``skipped``. An item
    repeated across pages is kept once."""
    out = []
    for f, k in zip(feats, keys, strict=True):
        if k in seen_ids:
            continue
        seen_ids.add(k)
        it = drop_feature_problems(f, skipped)
        if it is None or not screen_item(it, query.modality, query.collections, skipped):
            continue
        if modality_ok(it, query) and query.matches(it):
            out.append(it)
    return out


def api_search(
    spec: CatalogSpec, query: SearchQuery, skipped: list[SkippedItem]
) -> tuple[list[pystac.Item], int, bool]:
    from pystac_client import ConformanceClasses

    io = _stac_io(spec)
    io.session.start_deadline(spec.search_deadline_s)
    client = open_client(spec, io)
    kwargs: dict[str, Any] = {
        "collections": list(query.collections) or None,
        "ids": list(query.ids) or None,
        "bbox": list(query.bbox) if query.bbox else None,
        "intersects": query.intersects,
        "datetime": f"{iso_instant(query.datetime[0])}/{iso_instant(query.datetime[1])}"
        if query.datetime
        else None,
        "limit": min(spec.page_size, query.max_items or spec.page_size),
        "method": "POST",
    }
    cql = query.cql2()
    if cql is not None:
        if client.conforms_to(ConformanceClasses.FILTER):
            kwargs["filter"], kwargs["filter_lang"] = cql, "cql2-json"
        elif client.conforms_to(ConformanceClasses.QUERY):
            kwargs["query"] = query.query_ext()
        # else: client-side only (below)
    search = client.search(**{k: v for k, v in kwargs.items() if v is not None})
    pager = _Pager(spec, query, skipped)
    try:
        for page in search.pages_as_dicts():
            if not pager.take(page):
                break
    except (SearchError, UnsafeURLError):
        raise
    except Exception as e:
        raise _search_error(spec, e, f"search failed at page {pager.pages + 1}") from e
    finally:
        io.session.close()
    return pager.items, pager.pages, pager.truncated


class _Pager:
    """Collects result pages: de-duplicates items, enforces the caps, detects paging loops and
    checks each ``next`` link before pystac-client follows it."""

    def __init__(self, spec: CatalogSpec, query: SearchQuery, skipped: list[SkippedItem]) -> None:
        self.spec, self.query, self.skipped = spec, query, skipped
        self.items: list[pystac.Item] = []
        self.pages = 0
        self.truncated = False
        self._seen_next: set[str] = set()
        self._seen_ids: set[tuple[Any, Any]] = set()

    def take(self, page: dict[str, Any]) -> bool:
        """Add one page; False when the search should stop here."""
        self.pages += 1
        self._add_features(page.get("features", []))
        spec, query = self.spec, self.query
        if query.max_items and len(self.items) >= query.max_items:
            self.items = self.items[: query.max_items]
            return False
        if len(self.items) >= spec.item_cap:
            self.items, self.truncated = self.items[: spec.item_cap], True
            log.warning(
                "catalog %s: stopped at %d items (item_cap); results are incomplete",
                spec.name,
                spec.item_cap,
            )
            return False
        nxt = next((ln for ln in page.get("links", []) if ln.get("rel") == "next"), None)
        if nxt is None:
            return False
        self._check_next(nxt)
        if self.pages >= spec.max_pages:
            self.truncated = True
            log.warning(
                "catalog %s: stopped after %d pages (max_pages); results are incomplete",
                spec.name,
                self.pages,
            )
            return False
        return True

    def _add_features(self, feats: list[dict[str, Any]]) -> None:
        keys = [(f.get("collection"), f.get("id")) for f in feats]
        if keys and all(k in self._seen_ids for k in keys):
            raise SearchError(
                f"catalog '{self.spec.name}': page {self.pages} repeats only items already seen "
                "(paging loop)",
                fix="report the API's broken paging; narrow the search meanwhile",
            )
        self.items += _page_items(feats, keys, self._seen_ids, self.query, self.skipped)

    def _check_next(self, nxt: dict[str, Any]) -> None:
        name = self.spec.name
        check_url(str(nxt.get("href")), api_policy(self.spec), what=f"catalog '{name}' next link")
        token = json.dumps([nxt.get("href"), nxt.get("body")], sort_keys=True, default=str)
        if token in self._seen_next:
            raise SearchError(
                f"catalog '{name}': the API sent the same 'next' link twice "
                f"({redact_url(str(nxt.get('href')))}): paging loop",
                fix="report the API's broken paging; narrow the search meanwhile",
            )
        self._seen_next.add(token)
