"""Error classification (transient vs permanent) and the retry loop's limits."""

from __future__ import annotations

import pytest
import requests

from eo_fusion.errors import ReadError, UnsafeURLError
from eo_fusion.retry import (
    DeadlineError,
    IncompleteReadError,
    classify,
    retry_call,
)


def _http(status: int) -> requests.HTTPError:
    resp = requests.Response()
    resp.status_code = status
    return requests.HTTPError(f"{status} Server Error", response=resp)


def _chained(outer: Exception, inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except Exception as e:
        return e


@pytest.mark.parametrize(
    ("exc", "transient", "reason"),
    [
        (_http(429), True, "http 429"),
        (_http(503), True, "http 503"),
        (_http(404), False, "http 404"),
        (_http(403), False, "http 403"),
        (requests.ConnectionError("Connection reset by peer"), True, "network"),
        (requests.Timeout("Read timed out."), True, "network"),
        (TimeoutError("timed out"), True, "network"),
        (ConnectionResetError(104, "reset"), True, "network"),
        (ReadError("x: HTTP response code: 503"), True, "http 503"),
        (ReadError("x: HTTP response code: 404"), False, "http 404"),
        (ReadError("'/vsicurl/http://h/x.tif' not recognized as being in a supported file format"),
         False, "corrupt or truncated file"),
        (ReadError("'/vsicurl/http://h/x.tif' does not exist in the file system"), False,
         "missing"),
        (ReadError("x: Range downloading not supported by this server!"), False,
         "server ignores byte ranges"),
        (ValueError("Expecting value: line 1 column 1 (char 0)"), False,
         "corrupt or truncated file"),
        (UnsafeURLError("refused", fix="no"), False, "refused by the URL policy"),
        (DeadlineError("late"), False, "deadline"),
        (IncompleteReadError("cut"), True, "incomplete data"),
    ],
)  # fmt: skip
def test_classify(exc, transient, reason):
    v = classify(exc)
    assert (v.transient, v.reason) == (transient, reason)
    assert v.fix


def test_classify_looks_through_the_cause_chain_but_not_at_fix_text():
    wrapped = _chained(RuntimeError("APIError"), _http(502))
    assert classify(wrapped).reason == "http 502"
    # "raise GDALOptions timeouts" in a fix is advice, not a timeout.
    assert not classify(ReadError("bad header", fix="raise GDALOptions timeouts")).transient


def test_retry_call_retries_only_transient_and_respects_limits():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _http(503)
        return "ok"

    cleared = []
    out = retry_call(flaky, attempts=5, deadline_s=10, backoff_s=0, sleep=lambda s: None,
                     before_retry=lambda n, v: cleared.append(v.reason))  # fmt: skip
    assert out == "ok" and len(calls) == 3 and cleared == ["http 503", "http 503"]

    calls.clear()
    with pytest.raises(requests.HTTPError):
        retry_call(lambda: calls.append(1) or (_ for _ in ()).throw(_http(404)), attempts=5,
                   deadline_s=10, backoff_s=0, sleep=lambda s: None)  # fmt: skip
    assert len(calls) == 1  # permanent: no retry

    calls.clear()
    with pytest.raises(requests.HTTPError):
        retry_call(lambda: calls.append(1) or (_ for _ in ()).throw(_http(503)), attempts=3,
                   deadline_s=10, backoff_s=0, sleep=lambda s: None)  # fmt: skip
    assert len(calls) == 3  # attempts cap


def test_retry_call_deadline_and_retry_once():
    calls = []

    def always_503():
        calls.append(1)
        raise _http(503)

    with pytest.raises(requests.HTTPError):
        retry_call(always_503, attempts=100, deadline_s=1.0, backoff_s=0.4)
    assert len(calls) <= 3  # 0.4 + 0.8 s of backoff reach the 1 s deadline

    calls.clear()

    def cut():
        calls.append(1)
        raise IncompleteReadError("cut")

    with pytest.raises(IncompleteReadError):
        retry_call(cut, attempts=10, deadline_s=10, backoff_s=0, sleep=lambda s: None)
    assert len(calls) == 2  # one fresh fetch, then it is the file, not the transfer
