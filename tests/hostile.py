"""A hostile Ruxa API and CDN of the suite's own: one mode per attack, chosen per job.

A job whose prompt contains ``attack=MODE`` meets that attack; every other job gets a healthy,
minimal API (tasks succeed at once, one PNG each). So one poisoned job among forty shows whether a
single bad answer costs that job only. The server records every request path it receives, so a
test can see that nothing reached a path outside the API's own.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ruxa_batch.sandbox.images import render

KEY = "sk-hostile-test-key"
CREATE = "/api/v1/tasks/create"
QUERY = "/api/v1/tasks/query/"
PNG = render("hostile", width=8, height=8, fmt="png")

# Result URLs that no client can use.
BAD_URLS = {
    "url-bracket": "http://[::1",
    "url-port-letters": "http://127.0.0.1:abc/x.png",
    "url-port-big": "http://127.0.0.1:99999/x.png",
    "url-no-host": "http:///x.png",
    "url-bad-idn": "http://xn--/x.png",
}
DEEP = "[" * 100_000 + "]" * 100_000


class HostileServer:
    """Serves on 127.0.0.1 in a thread; ``base_url`` for the client, ``paths`` seen so far."""

    def __init__(self) -> None:
        self.tasks: dict[str, str] = {}  # task ID -> attack mode ("" for a healthy job)
        self.paths: list[str] = []
        self.creates = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                server.record(self.path)
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server.create(self, body)

            def do_GET(self) -> None:
                server.record(self.path)
                if self.path.startswith(QUERY):
                    server.query(self, self.path[len(QUERY) :])
                elif self.path.startswith("/files/"):
                    name, _, query = self.path[len("/files/") :].partition("?")
                    server.file(self, name.removesuffix(".png"), query)
                else:
                    send(self, 404, {"code": 404, "message": "not found"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def record(self, path: str) -> None:
        with self.lock:
            self.paths.append(path)

    # -- the API -------------------------------------------------------------------------------

    def create(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        prompt = str(body.get("input", {}).get("prompt", ""))
        found = re.search(r"attack=([\w-]+)", prompt)
        mode = found.group(1) if found else ""
        with self.lock:
            self.creates += 1
            task_id = f"task_{self.creates:05d}"
            if mode == "same-id":
                task_id = "task_shared"
            elif mode == "nul-id":
                task_id = "task_\x00bad"
            elif mode == "path-id":
                task_id = "../../admin?secret=1"
            self.tasks[task_id] = mode
        if mode == "gateway-504" and self.creates_of(mode) == 1:
            # An API gateway's timeout: the task exists, the answer is not the API's envelope.
            send(handler, 504, {"message": "Endpoint request timed out"})
        elif mode == "deep-create":
            send_raw(handler, 200, DEEP.encode())
        elif mode == "huge-create":
            pad = "x" * (8 * 1024 * 1024)
            send(handler, 200, {"code": 200, "data": {"taskId": task_id, "pad": pad}})
        else:
            send(handler, 200, {"code": 200, "message": "success", "data": {"taskId": task_id}})

    def creates_of(self, mode: str) -> int:
        with self.lock:
            return sum(1 for value in self.tasks.values() if value == mode)

    def query(self, handler: BaseHTTPRequestHandler, task_id: str) -> None:
        mode = self.tasks.get(task_id)
        if mode is None:
            send(handler, 404, {"code": 404, "message": "task not found"})
            return
        urls: Any = [f"{self.base_url}/files/{task_id}.png"]
        result_json: Any = None
        if mode in BAD_URLS:
            urls = [BAD_URLS[mode]]
        elif mode == "no-urls":
            urls = []
        elif mode == "urls-not-list":
            urls = urls[0]
        elif mode == "resultjson-broken":
            result_json = '{"resultUrls": ["http://'
        elif mode == "deep-result":
            result_json = DEEP
        elif mode == "gone":
            send(handler, 404, {"code": 404, "message": "task not found"})
            return
        elif mode == "retry-after-day":
            send(handler, 429, {"code": 429, "message": "slow down"}, {"Retry-After": "86400"})
            return
        elif mode == "trickle-query":
            trickle(handler, b'{"code": 200, "data": {"taskId": "x", "state": "waiting"}}')
            return
        elif mode == "huge-query":
            pad = "y" * (8 * 1024 * 1024)
            send(handler, 200, {"code": 200, "data": {"taskId": task_id, "state": "x", "p": pad}})
            return
        if result_json is None:
            result_json = json.dumps({"resultUrls": urls})
        data = {"taskId": task_id, "state": "success", "resultJson": result_json}
        send(handler, 200, {"code": 200, "message": "success", "data": data})

    def file(self, handler: BaseHTTPRequestHandler, task_id: str, query: str = "") -> None:
        mode = self.tasks.get(task_id)
        if mode == "redirect" and query:
            mode = ""  # the address redirected to serves the picture
        if mode is None:
            send(handler, 404, {"code": 404, "message": "no such file"})
        elif mode == "gzip-broken":
            # A gzip header, then a deflate block of a type that does not exist.
            broken = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xff\xff\xff"
            send_raw(handler, 200, broken, "image/png", {"Content-Encoding": "gzip"})
        elif mode == "redirect":
            # A CDN or object store sending the client on to a signed URL.
            send_raw(handler, 302, b"", "text/plain", {"Location": f"/files/{task_id}.png?hop=1"})
        elif mode == "redirect-loop":
            send_raw(handler, 302, b"", "text/plain", {"Location": f"/files/{task_id}.png"})
        elif mode == "redirect-ftp":
            send_raw(handler, 302, b"", "text/plain", {"Location": "ftp://127.0.0.1/x.png"})
        elif mode == "trickle-file":
            trickle(handler, PNG)
        elif mode == "gzip-bomb":
            bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
            send_raw(handler, 200, bomb, "image/png", {"Content-Encoding": "gzip"})
        else:
            send_raw(handler, 200, PNG, "image/png")

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> HostileServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    document: Any,
    headers: dict[str, str] | None = None,
) -> None:
    send_raw(handler, status, json.dumps(document).encode(), "application/json", headers)


def send_raw(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    kind: str = "application/json",
    headers: dict[str, str] | None = None,
) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass


def trickle(handler: BaseHTTPRequestHandler, body: bytes, pause: float = 0.5) -> None:
    """Send ``body`` one byte at a time: every read finishes well within a read timeout."""
    try:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for index in range(len(body)):
            handler.wfile.write(body[index : index + 1])
            handler.wfile.flush()
            time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError):
        pass


@contextmanager
def hostile_server() -> Iterator[HostileServer]:
    """A started :class:`HostileServer`, stopped afterwards."""
    server = HostileServer().start()
    try:
        yield server
    finally:
        server.stop()
