"""The standard proxy variables apply to the API and downloads; loopback traffic never uses them."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers import run_args, write_manifest

from ruxa_batch.client import RuxaClient
from ruxa_batch.ratelimit import RateLimiter


class Proxy:
    """A forward proxy on loopback that answers every create itself and notes what it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                proxy.seen.append(f"POST {self.path}")
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.dumps({"code": 200, "data": {"taskId": "task_via_proxy"}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    server = Proxy()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_the_api_is_reached_through_the_proxy_the_environment_names(proxy, monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)

    async def create() -> str:
        # api.example.invalid is never resolved: the request goes to the proxy.
        async with RuxaClient(
            base_url="http://api.example.invalid",
            api_key="sk-test",
            concurrency=1,
            limiter=RateLimiter(100),
        ) as client:
            return await client.create({"model": "m", "input": {}})

    assert asyncio.run(create()) == "task_via_proxy"
    assert proxy.seen == ["POST http://api.example.invalid/api/v1/tasks/create"]


def test_a_loopback_api_never_goes_through_a_proxy(run, hermetic, sandbox, monkeypatch) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    write_manifest(hermetic, 2)
    result = run(run_args(sandbox))
    assert result.code == 0, result.err
