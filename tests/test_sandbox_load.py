"""The sandbox holds the engine's load: 2,000 jobs at concurrency 32, no errors it did not inject."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from helpers import SandboxProcess, edit_request

pytestmark = pytest.mark.slow

JOBS = 2000
CONCURRENCY = 32
GENERATION_TIME = 0.05


async def _run(base_url: str, api_key: str) -> list[int]:
    """Create, poll until success and download every job; the size of each download."""
    jobs = iter(range(JOBS))
    sizes: list[int] = []

    async def worker() -> None:
        # One single-connection client per worker: 32 keep-alive connections, as one client with
        # max_connections=32 would open, but httpcore's pool scans every connection on every
        # request, which would make the test measure the client instead of the server.
        async with httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            limits=httpx.Limits(max_connections=1),
            timeout=30,
        ) as http:
            for job in jobs:
                body = edit_request(prompt=f"job {job}", output_format=("png", "jpeg")[job % 2])
                created = await http.post("/api/v1/tasks/create", json=body)
                created.raise_for_status()
                task_id = created.json()["data"]["taskId"]
                await asyncio.sleep(GENERATION_TIME)
                while True:
                    queried = await http.get(f"/api/v1/tasks/query/{task_id}")
                    queried.raise_for_status()
                    data = queried.json()["data"]
                    if data["state"] == "success":
                        break
                    assert data["state"] in ("waiting", "queuing", "generating")
                    await asyncio.sleep(0.01)
                downloaded = await http.get(json.loads(data["resultJson"])["resultUrls"][0])
                downloaded.raise_for_status()
                sizes.append(len(downloaded.content))

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return sizes


def test_two_thousand_jobs_at_concurrency_32(sandbox_process: SandboxProcess) -> None:
    # The sandbox in its own process: in this one, its threads and the client would take turns
    # on one GIL, and the test would take twice as long (15 s instead of 8 on two cores).
    server = sandbox_process
    start = time.monotonic()
    sizes = asyncio.run(_run(server.base_url, server.api_key))
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
