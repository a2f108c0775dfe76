"""HTTP around :class:`~ruxa_batch.sandbox.api.Sandbox`: a threaded, keep-alive loopback server."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from ruxa_batch.addresses import is_loopback
from ruxa_batch.errors import EXIT_INVALID, EXIT_OK
from ruxa_batch.sandbox.api import (
    CREATE_PATH,
    FILES_PREFIX,
    QUERY_PREFIX,
    UPLOADS_PREFIX,
    Reply,
    Sandbox,
    to_json,
)
from ruxa_batch.sandbox.blobs import MAX_BLOB_BYTES
from ruxa_batch.sandbox.config import SandboxConfig
from ruxa_batch.sandbox.store import DATA_FILENAME, SandboxStore

MAX_BODY = 1 << 20  # a create body is a few hundred bytes; refuse to buffer megabytes
# An upload over the cap is read and dropped up to this size, so its sender sees the 413 rather
# than a reset connection; beyond it the connection is closed unread.
MAX_DISCARD = 64 << 20


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # a burst of 32+ connections must not meet a full accept queue

    sandbox: Sandbox  # set once the bound port, and so the base URL, is known; before serving

    def __init__(self, address: tuple[str, int]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client hanging up is routine, not worth a traceback
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Cut keep-alive connections, so clients see the server go away."""
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the engine reuses its connections
    server_version = "ruxa-sandbox"
    sys_version = ""
    wbufsize = 1 << 16  # headers and body leave in one write, not two small segments
    disable_nagle_algorithm = True
    timeout = 120  # an idle keep-alive connection gives its thread back eventually
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # thousands of requests per second: stderr is not a log

    def do_GET(self) -> None:
        self._answer(self._route("GET", self._read_body()))

    def do_POST(self) -> None:
        self._answer(self._route("POST", self._read_body()))

    def do_PUT(self) -> None:
        limit = MAX_BLOB_BYTES if self._path().startswith(UPLOADS_PREFIX) else MAX_BODY
        self._answer(self._route("PUT", self._read_body(limit)))

    def do_HEAD(self) -> None:
        self._answer(self._route("HEAD", self._read_body()), head=True)

    def _path(self) -> str:
        return unquote(urlsplit(self.path).path)

    def _read_body(self, limit: int = MAX_BODY) -> bytes | None:
        """The request body, or ``None`` when it is too large to accept."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > limit:
            if length <= MAX_DISCARD:
                while length > 0:
                    length -= len(self.rfile.read(min(length, 1 << 20)) or b"\0" * length)
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _route(self, method: str, body: bytes | None) -> Reply | None:
        sandbox = self.server.sandbox
        path = self._path()
        if path.startswith(UPLOADS_PREFIX):
            name = path[len(UPLOADS_PREFIX) :]
            if method == "PUT":
                return sandbox.put_upload(self.headers.get("Authorization"), name, body)
            if method in ("GET", "HEAD"):
                return sandbox.get_upload(name)
        if method == "GET" and path == "/_sandbox/counters":
            return Reply(200, to_json(sandbox.counters()))
        if method == "GET" and path == "/_sandbox/tasks":
            return Reply(200, to_json(sandbox.tasks()))
        if sandbox.config.latency:
            time.sleep(sandbox.config.latency)
        authorization = self.headers.get("Authorization")
        if method == "POST" and path == CREATE_PATH:
            return sandbox.create(authorization, body)
        if method == "GET" and path.startswith(QUERY_PREFIX):
            return sandbox.query(authorization, path[len(QUERY_PREFIX) :])
        if method == "GET" and path.startswith(FILES_PREFIX):
            return sandbox.download(path[len(FILES_PREFIX) :])
        return sandbox.not_found(api=path.startswith("/api/"))

    def _answer(self, reply: Reply | None, *, head: bool = False) -> None:
        """Send ``reply``; for ``HEAD`` only its headers (with the length the body has)."""
        if reply is None:  # the injected drop: the work is done, the answer never comes
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(reply.body)


class SandboxServer:
    """The sandbox on a background thread: ``with SandboxServer(config) as sb: sb.base_url``.

    With ``data_dir``, tasks and counters are kept in ``data_dir/sandbox.sqlite``, uploads in
    ``data_dir/uploads/`` and the input pictures read for tasks in ``data_dir/inputs/``, and a
    server started later on the same folder carries on with them (see
    :mod:`ruxa_batch.sandbox.store` and :mod:`ruxa_batch.sandbox.blobs`);
    with port 0 it then listens on the previous port if it is free, so result URLs handed out
    before the restart still lead to their files. Without ``data_dir``, everything is in memory.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
    ) -> None:
        self._config = config or SandboxConfig()
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self._httpd: _HTTPServer | None = None
        self._sandbox: Sandbox | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SandboxServer:
        """Bind and serve in the background; port 0 picks a free port. ``OSError`` if it cannot."""
        if self._httpd is not None:
            raise RuntimeError("the sandbox is already running")
        store = SandboxStore(self.data_dir) if self.data_dir is not None else None
        httpd: _HTTPServer | None = None
        try:
            httpd = self._listen(store)
            self.port = httpd.server_address[1]
            # A wildcard bind is reachable through loopback too; result URLs must be fetchable.
            host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
            netloc = f"[{host}]" if ":" in host else host
            # Never stored: a restarted sandbox gets its key as at any start.
            api_key = self._config.api_key or f"sk-sandbox-{secrets.token_hex(16)}"
            base_url = f"http://{netloc}:{self.port}"
            sandbox = Sandbox(self._config, api_key=api_key, base_url=base_url, store=store)
        except BaseException:
            if httpd is not None:
                httpd.server_close()
            if store is not None:
                store.close()
            raise
        httpd.sandbox = sandbox
        self._httpd, self._sandbox = httpd, sandbox
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def _listen(self, store: SandboxStore | None) -> _HTTPServer:
        """Bind; "any port" prefers the one the stored data last served on."""
        previous = store.port() if store is not None and self.port == 0 else None
        httpd = None
        if previous:
            with contextlib.suppress(OSError):  # taken meanwhile: any free port will do
                httpd = _HTTPServer((self.host, previous))
        httpd = httpd or _HTTPServer((self.host, self.port))
        if store is not None:
            store.save_port(httpd.server_address[1])
        return httpd

    def stop(self) -> None:
        """Stop serving and close every connection; save and close the data. Safe to call twice."""
        httpd, sandbox = self._httpd, self._sandbox
        if httpd is None or sandbox is None:
            return
        self._httpd = None
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        sandbox.close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def _running(self) -> Sandbox:
        if self._sandbox is None:
            raise RuntimeError("the sandbox has not been started")
        return self._sandbox

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, the root for the API paths and the result files."""
        return self._running.base_url

    @property
    def api_key(self) -> str:
        """The bearer key the sandbox accepts."""
        return self._running.api_key

    @property
    def config(self) -> SandboxConfig:
        """The configuration in force."""
        return self._running.config if self._sandbox else self._config

    @property
    def data_file(self) -> Path | None:
        """The file that keeps tasks and counters, or ``None`` when they live in memory only."""
        return self.data_dir / DATA_FILENAME if self.data_dir is not None else None

    def counters(self) -> dict[str, int]:
        """A snapshot of the counters (the same as ``GET /_sandbox/counters``)."""
        return self._running.counters()

    def tasks(self) -> list[dict[str, Any]]:
        """Every task so far (the same as ``GET /_sandbox/tasks``)."""
        return self._running.tasks()

    def update(self, **changes: Any) -> None:
        """Change :class:`SandboxConfig` fields while serving, e.g. ``update(credits=10)``."""
        self._config = replace(self.config, **changes)
        if self._sandbox is not None:
            self._sandbox.reconfigure(self._config)


def serve(config: SandboxConfig, *, host: str, port: int, data_dir: Path | None = None) -> int:
    """Serve in the foreground until Ctrl-C; prints the base URL and key. Returns the exit code.

    With ``data_dir``, tasks and counters are kept there across restarts (see
    :class:`SandboxServer`); a damaged or busy data file raises
    :class:`~ruxa_batch.sandbox.store.SandboxDataError`.
    """
    server = SandboxServer(config, host=host, port=port, data_dir=data_dir)
    try:
        server.start()
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    if not is_loopback(host):
        print(
            f"warning: listening on {host}, not loopback: other machines can reach the sandbox",
            file=sys.stderr,
        )
    faults = config.faults()
    print(f"Ruxa sandbox serving at {server.base_url}")
    print(f"API key: {server.api_key}")
    print(f"Settings: {json.dumps(faults) if faults else 'defaults, no faults'}")
    if server.data_file is not None:
        print(f"Data: {server.data_file}  (tasks and counters are kept across restarts)")
    print(f"Counters: {server.base_url}/_sandbox/counters  (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return EXIT_OK
