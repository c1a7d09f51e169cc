"""A byte-range HTTP file server on 127.0.0.1 (``eo-fusion catalog serve``, offline use, tests).

:func:`serve_directory` serves a folder over HTTP/1.1 with byte-range support (``206 Partial
Content``, ``Accept-Ranges``, ``Content-Range``, ``HEAD``), which is what GDAL's ``/vsicurl/``
needs to read Cloud-Optimised GeoTIFFs the way it reads them from cloud storage. Every response is
recorded in a thread-safe :class:`RequestLog` (requests and body bytes per path), so a test can
check that a small window read fetched only a fraction of a file.

Example::

    with serve_directory("catalogs/sample") as srv:
        url = srv.url_for("data/slovenia/DEM_slovenia_10m.tif")
        with rasterio.open("/vsicurl/" + url) as ds:
            ...
        print(srv.log.bytes_sent(url))
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import mimetypes
import os
import re
import select
import signal
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["FileServer", "RequestLog", "RequestRecord", "serve_directory", "stop_process"]

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 64 * 1024


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate ``proc`` and wait for it; kill it if it is still running after ``timeout`` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@dataclass(frozen=True)
class RequestRecord:
    """One answered request: method, URL path, HTTP status, body bytes sent, Range header."""

    method: str
    path: str
    status: int
    bytes_sent: int
    range_header: str | None


@dataclass
class RequestLog:
    """Thread-safe record of what a server answered.

    For a server running in a child process the records arrive through a pipe; they are read in
    on every access (a record is sent before the response body, so once a client has its bytes,
    the log has the record).
    """

    _records: list[RequestRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stream: Any = None  # stdout pipe of a server process (JSON lines), if any
    _buf: bytes = b""

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _drain(self) -> None:
        # Caller holds the lock. Reads whatever the server process has written, without blocking.
        if self._stream is None:
            return
        fd = self._stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except (OSError, ValueError):
                self._stream = None
                break
            if not chunk:  # server process gone
                self._stream = None
                break
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if line.strip():
                self._records.append(RequestRecord(*json.loads(line)))

    def _pump(self) -> None:
        # Background reader so the pipe never fills while nobody looks at the log.
        while self._stream is not None:
            try:
                ready, _, _ = select.select([self._stream], [], [], 0.1)
            except (OSError, ValueError):
                return
            if ready:
                with self._lock:
                    self._drain()

    @property
    def records(self) -> list[RequestRecord]:
        """A copy of all records so far, in the order answered."""
        with self._lock:
            self._drain()
            return list(self._records)

    @staticmethod
    def _path_of(path_or_url: str) -> str:
        return urllib.parse.urlsplit(path_or_url).path or "/"

    def requests(self, path_or_url: str | None = None, method: str | None = None) -> int:
        """Number of requests (optionally for one path/URL and one method)."""
        return len(self._select(path_or_url, method))

    def bytes_sent(self, path_or_url: str | None = None) -> int:
        """Body bytes sent in total, or for one path/URL (headers not counted)."""
        return sum(r.bytes_sent for r in self._select(path_or_url, None))

    def by_path(self) -> dict[str, tuple[int, int]]:
        """Path -> (requests, body bytes sent)."""
        out: dict[str, tuple[int, int]] = {}
        for r in self.records:
            n, b = out.get(r.path, (0, 0))
            out[r.path] = (n + 1, b + r.bytes_sent)
        return out

    def clear(self) -> None:
        with self._lock:
            self._drain()
            self._records.clear()

    def _select(self, path_or_url: str | None, method: str | None) -> list[RequestRecord]:
        want = None if path_or_url is None else self._path_of(path_or_url)
        return [
            r
            for r in self.records
            if (want is None or r.path == want) and (method is None or r.method == method)
        ]


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` -> inclusive (start, end) clipped to the file; ``None`` if unsatisfiable.

    Only single ranges are supported (GDAL sends single ranges); a multi-range header is treated
    as unsatisfiable rather than answered wrongly.
    """
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            return None
        return max(0, size - n), size - 1
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if start >= size or end < start:
        return None
    return start, end


class _RangeHandler(BaseHTTPRequestHandler):
    """GET/HEAD of files under :attr:`root` with single byte ranges; every answer goes to
    :attr:`sink`. Subclassed per server by :func:`_make_handler`."""

    protocol_version = "HTTP/1.1"  # keep-alive, as GDAL/libcurl expect from object stores
    # Send each write at once (TCP_NODELAY), as object stores and nginx do: with Nagle, a
    # response whose headers and body go out in separate writes waits ~40 ms for the
    # client's delayed ACK, a stall per request that no real server adds (measured: opening
    # a COG over loopback 59 ms with it, 23 ms without).
    disable_nagle_algorithm = True
    server_version = "eo-fusion-fileserver"
    root: Path
    sink: Callable[[RequestRecord], None]

    def log_message(self, format: str, *args: object) -> None:
        return  # the RequestLog is the record; stderr noise helps nobody in tests

    def _resolve(self) -> Path | None:
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        candidate = (self.root / url_path.lstrip("/")).resolve()
        # Refuse anything that escapes the served folder (../, symlinks pointing out).
        if candidate != self.root and self.root not in candidate.parents:
            return None
        return candidate if candidate.is_file() else None

    def _record(self, status: int, sent: int) -> None:
        self.sink(
            RequestRecord(
                method=self.command,
                path=urllib.parse.urlsplit(self.path).path,
                status=status,
                bytes_sent=sent,
                range_header=self.headers.get("Range"),
            )
        )

    def _error(self, status: HTTPStatus) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self._record(status.value, 0 if self.command == "HEAD" else len(body))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _unsatisfiable(self, size: int) -> None:
        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self._record(416, 0)
        self.end_headers()

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _serve(self, *, send_body: bool) -> None:
        path = self._resolve()
        if path is None:
            self._error(HTTPStatus.NOT_FOUND)
            return
        stat = path.stat()
        size = stat.st_size
        status = HTTPStatus.OK
        start, end = 0, size - 1
        range_header = self.headers.get("Range")
        if range_header:
            rng = _parse_range(range_header, size)
            if rng is None:
                self._unsatisfiable(size)
                return
            start, end = rng
            status = HTTPStatus.PARTIAL_CONTENT
        length = max(0, end - start + 1)
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        # Record before the response is complete: once a client has its bytes, the log
        # already has them (a client hanging up early is still counted as served).
        self._record(status.value, length if send_body else 0)
        self.end_headers()
        if send_body and length:
            self._send_bytes(path, start, length)

    def _send_bytes(self, path: Path, start: int, length: int) -> None:
        with path.open("rb") as fh:
            fh.seek(start)
            remaining = length
            while remaining:
                chunk = fh.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break  # client hung up (GDAL often does after enough bytes)
                remaining -= len(chunk)


def _make_handler(
    root: Path, sink: Callable[[RequestRecord], None]
) -> type[BaseHTTPRequestHandler]:
    """A :class:`_RangeHandler` bound to one served folder and one record sink."""
    bound = {"root": root.resolve(), "sink": staticmethod(sink)}
    return type("_BoundRangeHandler", (_RangeHandler,), bound)


@dataclass
class FileServer:
    """A running server: its base URL (no trailing slash), root folder and request log."""

    url: str
    root: Path
    log: RequestLog
    port: int

    def url_for(self, relpath: str | os.PathLike[str]) -> str:
        """URL of a file given its path relative to the served root (``/`` separators)."""
        rel = Path(relpath).as_posix().lstrip("/")
        return f"{self.url}/{urllib.parse.quote(rel)}"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # handler threads never keep the interpreter alive

    def handle_error(self, request: object, client_address: object) -> None:
        return  # client disconnects mid-response are normal for range readers


@contextlib.contextmanager
def serve_handler(
    handler_factory: Callable[[], type[BaseHTTPRequestHandler]], host: str = "127.0.0.1"
) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    """Run any request handler class on ``host`` at a free port; yields (base URL, server)."""
    server = _QuietServer((host, 0), handler_factory())
    thread = threading.Thread(target=server.serve_forever, name="eo-fusion-http", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve_directory(
    root: str | os.PathLike[str], host: str = "127.0.0.1", *, in_process: bool = False
) -> Iterator[FileServer]:
    """Serve ``root`` over HTTP with byte ranges on ``host`` at a free port.

    Args:
        root: folder to serve (files outside it are never served, even through symlinks).
        host: interface to bind; loopback by default (never expose test data on a network).
        in_process: run the server in a thread of this process instead of a child process.
            The default (child process) is safe with GDAL: some GDAL calls hold Python's GIL
            while doing HTTP, which deadlocks against a server thread in the same process.

    Yields:
        A :class:`FileServer`; its ``log`` counts requests and body bytes per path.
    """
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise NotADirectoryError(f"cannot serve {root_path}: not a folder")
    if in_process:
        log = RequestLog()
        with serve_handler(lambda: _make_handler(root_path, log.add), host) as (url, server):
            yield FileServer(url=url, root=root_path, log=log, port=int(server.server_address[1]))
        return
    # A separate interpreter (not fork/spawn of this one: no re-import of the caller's script).
    cmd = [sys.executable, "-m", "eo_fusion.catalogs.fileserver", str(root_path), host]
    # stdin stays open for the server's lifetime: the server exits when it closes, so it never
    # outlives this process (even if it is killed).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline().split()
        if len(first) != 2 or first[0] != b"port":
            raise RuntimeError(f"file server for {root_path} failed to start (got {first!r})")
        port = int(first[1])
        os.set_blocking(proc.stdout.fileno(), False)
        log = RequestLog(_stream=proc.stdout)
        threading.Thread(target=log._pump, name="eo-fusion-http-log", daemon=True).start()
        yield FileServer(url=f"http://{host}:{port}", root=root_path, log=log, port=port)
    finally:
        stop_process(proc)
        if "log" in locals():
            with log._lock:
                log._drain()
                log._stream = None
        proc.stdout.close()
        if proc.stdin:
            proc.stdin.close()


def _main(argv: list[str]) -> None:
    """Server process: print ``port N``, then one JSON line per answered request."""
    root, host = argv[0], argv[1] if len(argv) > 1 else "127.0.0.1"
    lock = threading.Lock()
    out = sys.stdout.buffer

    def sink(record: RequestRecord) -> None:
        line = json.dumps(astuple(record)).encode() + b"\n"
        with lock:
            out.write(line)
            out.flush()

    server = _QuietServer((host, 0), _make_handler(Path(root), sink))
    out.write(f"port {server.server_address[1]}\n".encode())
    out.flush()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # records are flushed per request

    def _exit_with_parent() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
        os._exit(0)

    threading.Thread(target=_exit_with_parent, daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    _main(sys.argv[1:])
