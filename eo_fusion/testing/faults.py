"""A loopback HTTP server that misbehaves on demand, for fault-injection tests.

:func:`serve_faults` starts one server in a child process (GDAL may hold Python's GIL while it
does HTTP, which would deadlock against a server thread in the same process) and returns a
:class:`FaultServer` that the test steers over HTTP:

* **content**: files under ``root`` (byte ranges honoured, as object stores do) and routes
  added with :meth:`FaultServer.route` (any body; ``{base}`` in it becomes the server's URL, so
  STAC landing pages and result pages can link to each other);
* **faults**: :meth:`FaultServer.fault` queues misbehaviours for a path (``*`` = any path), each
  for the next ``times`` requests (``-1``: for ever): an HTTP ``status`` (with ``Retry-After``),
  a ``stall`` before answering, a ``trickle`` (one byte per interval), ``truncate`` (announce
  the full length, send ``keep_bytes``, hang up), ``reset`` (TCP RST), ``ignore_range``
  (answer 200 with the whole file), a ``redirect`` to any URL, and ``bad_json``;
* **log**: :meth:`FaultServer.log` lists every request answered (method, path, status, body
  bytes, Range header).

Example::

    with serve_faults(sample_dir) as srv:
        srv.fault("/data/dem.tif", Fault("truncate", keep_bytes=100))
        ...  # the first GET of dem.tif is cut short, the next ones are whole
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

__all__ = ["Fault", "FaultServer", "serve_faults"]

FaultKind = Literal[
    "status", "stall", "trickle", "truncate", "reset", "ignore_range", "redirect", "bad_json"
]
_CONTROL = "/__control__"
_BODY_FAULTS = frozenset({"trickle", "truncate", "ignore_range", "bad_json"})
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Fault:
    """One misbehaviour.

    Attributes:
        kind: what to do (see the module docstring).
        status: HTTP status for ``status`` (and ``redirect``: 301/302/303/307/308).
        headers: extra response headers (e.g. ``{"Retry-After": "1"}``).
        seconds: stall length, or the interval between trickled bytes.
        location: redirect target (``{base}`` = this server's URL).
        keep_bytes: body bytes sent before a ``truncate`` hangs up.
        times: how many requests get this fault (``-1``: all).
    """

    kind: FaultKind
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    location: str = ""
    keep_bytes: int = 0
    times: int = 1


@dataclass
class FaultServer:
    """Handle of a running fault server: its base URL (no trailing slash) and controls."""

    url: str
    port: int

    def url_for(self, path: str) -> str:
        return f"{self.url}/{urllib.parse.quote(path.lstrip('/'))}"

    def _post(self, what: str, payload: Any) -> Any:
        req = urllib.request.Request(
            f"{self.url}{_CONTROL}/{what}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def route(self, path: str, body: bytes | str | dict | list, content_type: str = "") -> None:
        """Serve ``body`` at ``path`` (query included if given; JSON for dicts/lists)."""
        if isinstance(body, dict | list):
            text, ctype = json.dumps(body), content_type or "application/json"
        elif isinstance(body, bytes):
            text, ctype = body.decode("latin-1"), content_type or "application/octet-stream"
        else:
            text, ctype = body, content_type or "text/plain"
        self._post("route", {"path": path, "body": text, "type": ctype})

    def fault(self, path: str, *faults: Fault) -> None:
        """Queue ``faults`` (in order) for ``path`` (``*``: any path without its own queue)."""
        self._post("fault", {"path": path, "faults": [asdict(f) for f in faults]})

    def clear(self) -> None:
        """Drop all queued faults and the request log (routes stay)."""
        self._post("clear", {})

    def log(self) -> list[dict[str, Any]]:
        """Requests answered so far: dicts with method, path, status, bytes, range."""
        return list(self._post("log", {}))

    def requests(self, path: str | None = None) -> int:
        want = None if path is None else urllib.parse.urlsplit(path).path
        return sum(1 for r in self.log() if want is None or r["path"].split("?")[0] == want)


# ------------------------------------------------------------------------------------------------
# the server (runs in the child process)
# ------------------------------------------------------------------------------------------------


class _State:
    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root else None
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.faults: dict[str, list[dict[str, Any]]] = {}
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def next_fault(self, path: str, method: str) -> dict[str, Any] | None:
        with self.lock:
            for key in (path, path.split("?")[0], "*"):
                queue = self.faults.get(key)
                if queue:
                    f = queue[0]
                    if method == "HEAD" and f["kind"] in _BODY_FAULTS:
                        return None  # body faults wait for a request that has a body
                    if f["times"] > 0:
                        f["times"] -= 1
                        if f["times"] == 0:
                            queue.pop(0)
                    return dict(f)
        return None

    def content(self, path: str) -> tuple[bytes, str] | None:
        with self.lock:
            hit = self.routes.get(path) or self.routes.get(path.split("?")[0])
        if hit is not None:
            return hit
        if self.root is None:
            return None
        rel = urllib.parse.unquote(path.split("?")[0]).lstrip("/")
        candidate = (self.root / rel).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            return None
        if not candidate.is_file():
            return None
        return candidate.read_bytes(), "application/octet-stream"


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):
        n = int(m.group(2))
        return (max(0, size - n), size - 1) if n else None
    start = int(m.group(1))
    end = size - 1 if not m.group(2) else min(int(m.group(2)), size - 1)
    return None if start >= size or end < start else (start, end)


class _FaultHandler(BaseHTTPRequestHandler):
    """Serves content and applies queued faults; ``state`` is set per server."""

    state: _State
    protocol_version = "HTTP/1.1"
    server_version = "eo-fusion-faults"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _record(self, status: int, sent: int) -> None:
        with self.state.lock:
            self.state.log.append(
                {"method": self.command, "path": self.path, "status": status,
                 "bytes": sent, "range": self.headers.get("Range")}
            )  # fmt: skip

    def _base(self) -> str:
        return f"http://{self.headers.get('Host') or '127.0.0.1'}"

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self._record(status, 0 if self.command == "HEAD" else len(body))
        self.end_headers()
        if self.command != "HEAD":
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else b""
        if self.path.startswith(_CONTROL):
            self._control(self.path[len(_CONTROL) + 1 :], json.loads(payload or b"{}"))
            return
        self._serve()

    def _control(self, what: str, doc: dict[str, Any]) -> None:
        out: Any = None
        with self.state.lock:
            if what == "route":
                self.state.routes[doc["path"]] = (doc["body"].encode("latin-1"), doc["type"])
            elif what == "fault":
                self.state.faults.setdefault(doc["path"], []).extend(doc["faults"])
            elif what == "clear":
                self.state.faults.clear()
                self.state.log.clear()
            elif what == "log":
                out = list(self.state.log)
        body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _serve(self) -> None:
        fault = self.state.next_fault(self.path, self.command)
        if fault is not None and self._pre_fault(fault):
            return
        found = self.state.content(self.path)
        if found is None:
            self._send(404, b"404 Not Found\n", "text/plain", {})
            return
        body, ctype = found
        body = body.replace(b"{base}", self._base().encode())
        self._body(body, ctype, fault)

    def _pre_fault(self, f: dict[str, Any]) -> bool:
        """Faults that replace the answer; True when the request is fully handled."""
        kind = f["kind"]
        if kind == "stall":
            self.state.stopping.wait(f["seconds"])
            return False
        if kind == "status":
            self._send(f["status"], b'{"code": "fault"}', "application/json", f["headers"])
            return True
        if kind == "redirect":
            loc = f["location"].replace("{base}", self._base())
            self._send(f["status"] if 300 <= f["status"] < 400 else 302, b"", "text/plain",
                       {"Location": loc, **f["headers"]})  # fmt: skip
            return True
        if kind == "bad_json":
            self._send(200, b'{"type": "FeatureCollection", "features": [{"id": ',
                       "application/geo+json", {})  # fmt: skip
            return True
        if kind == "reset":
            self._record(0, 0)
            # SO_LINGER 0: close sends RST, the client sees "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return True
        return False

    def _body(self, body: bytes, ctype: str, f: dict[str, Any] | None) -> None:
        kind = f["kind"] if f else ""
        headers = {"Accept-Ranges": "bytes"}
        status, start, end = 200, 0, len(body) - 1
        rng = self.headers.get("Range")
        if rng and kind != "ignore_range":
            span = _parse_range(rng, len(body))
            if span is None:
                self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(body)}"})
                return
            status, (start, end) = 206, span
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
        part = body[start : end + 1]
        if f is None or kind not in ("trickle", "truncate"):
            self._send(status, part, ctype, headers)
            return
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(part)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        sent = self._write_slowly(part, f) if kind == "trickle" else self._cut(part, f)
        self._record(status, sent)

    def _write_slowly(self, part: bytes, f: dict[str, Any]) -> int:
        for i in range(len(part)):
            if self.state.stopping.wait(f["seconds"]):
                return i
            try:
                self.wfile.write(part[i : i + 1])
                self.wfile.flush()
            except OSError:
                return i
        return len(part)

    def _cut(self, part: bytes, f: dict[str, Any]) -> int:
        keep = part[: f["keep_bytes"]]
        with contextlib.suppress(OSError):
            self.wfile.write(keep)
            self.wfile.flush()
        self.close_connection = True
        return len(keep)


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    return type("FaultHandler", (_FaultHandler,), {"state": state})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return


@contextlib.contextmanager
def serve_faults(
    root: str | os.PathLike[str] | None = None, host: str = "127.0.0.1"
) -> Iterator[FaultServer]:
    """Run a fault server (child process) serving ``root`` (optional) on ``host``."""
    cmd = [sys.executable, "-m", "eo_fusion.testing.faults", str(root or ""), host]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        first = proc.stdout.readline().split()
        if len(first) != 2 or first[0] != b"port":
            raise RuntimeError(f"fault server failed to start (got {first!r})")
        port = int(first[1])
        yield FaultServer(url=f"http://{host}:{port}", port=port)
    finally:
        proc.stdin.close()  # the child exits when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


def _main(argv: list[str]) -> None:
    root = Path(argv[0]) if argv and argv[0] else None
    host = argv[1] if len(argv) > 1 else "127.0.0.1"
    state = _State(root)
    server = _Server((host, 0), _handler(state))
    sys.stdout.write(f"port {server.server_address[1]}\n")
    sys.stdout.flush()

    def _exit_with_parent() -> None:
        sys.stdin.buffer.read()  # EOF: the parent closed the pipe or died
        state.stopping.set()
        time.sleep(0.05)
        os._exit(0)

    threading.Thread(target=_exit_with_parent, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    _main(sys.argv[1:])
