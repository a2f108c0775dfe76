"""The sandbox holds the engine's load: 2,000 jobs at concurrency 32, no errors it did not inject."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import SandboxProcess, edit_request

pytestmark = pytest.mark.slow

JOBS = 2000
CONCURRENCY = 32
GENERATION_TIME = 0.05


def _run(base_url: str, api_key: str) -> list[int]:
    """Create, poll until success and download every job; the size of each download."""
    jobs = iter(range(JOBS))
    take = threading.Lock()
    sizes: list[int] = []
    failures: list[BaseException] = []
    address = urlsplit(base_url)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def call(
        connection: http.client.HTTPConnection, method: str, path: str, body: Any = None
    ) -> bytes:
        connection.request(method, path, json.dumps(body) if body is not None else None, headers)
        answer = connection.getresponse()
        data = answer.read()
        assert answer.status == 200, (method, path, answer.status, data[:200])
        return data

    def worker() -> None:
        # One keep-alive connection per worker, 32 in all, as the engine opens at concurrency
        # 32. Plain http.client in threads: an httpx client per worker spent 5 s of CPU here,
        # the server 7 s, so the test measured the client about as much as the server.
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        try:
            while True:
                with take:
                    job = next(jobs, None)
                if job is None:
                    return
                body = edit_request(prompt=f"job {job}", output_format=("png", "jpeg")[job % 2])
                created = json.loads(call(connection, "POST", "/api/v1/tasks/create", body))
                task_id = created["data"]["taskId"]
                query = f"/api/v1/tasks/query/{task_id}"
                time.sleep(GENERATION_TIME)
                while True:
                    data = json.loads(call(connection, "GET", query))["data"]
                    if data["state"] == "success":
                        break
                    assert data["state"] in ("waiting", "queuing", "generating")
                    time.sleep(0.01)
                url = urlsplit(json.loads(data["resultJson"])["resultUrls"][0])
                assert (url.hostname, url.port) == (address.hostname, address.port), url
                sizes.append(len(call(connection, "GET", url.path)))
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sizes


def test_two_thousand_jobs_at_concurrency_32(sandbox_process: SandboxProcess) -> None:
    # The sandbox in its own process: in this one, its threads and the client would take turns
    # on one GIL, and the test would take twice as long.
    server = sandbox_process
    start = time.monotonic()
    sizes = _run(server.base_url, server.api_key)
    elapsed = time.monotonic() - start
    assert len(sizes) == JOBS and all(sizes)
    counters = server.counters()
    assert counters["creates"] == counters["downloads"] == JOBS
    for fault in (
        "creates_rejected",
        "server_errors",
        "garbage",
        "dropped",
        "rate_limited",
        "not_found",
        "unauthorized",
        "invalid",
        "duplicate_creates",
    ):
        assert counters[fault] == 0, fault
    assert elapsed < 60
