"""The sandbox holds up under the load the engine puts on it (2,000 jobs, concurrency 32)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

JOBS = 2000


@pytest.fixture
def sandbox_process() -> Iterator[str]:
    """A sandbox in its own process (as users run it), on a free loopback port."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ruxa_batch",
            "sandbox",
            "--port",
            "0",
            "--generation-time",
            "0.05",
            "--api-key",
            "sk-sandbox-load-test",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    match = re.search(r"serving at (http://127\.0\.0\.1:\d+)", first)
    assert match, first
    try:
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_2000_jobs_at_concurrency_32(
    run, hermetic: Path, sandbox_process: str, monkeypatch
) -> None:
    rows = "".join(f"      - {{n: '{i:05d}'}}\n" for i in range(JOBS))
    (hermetic / "m.yaml").write_text(
        "version: 1\nname: load\njobs:\n  - id: 'j-{n}'\n    prompt: 'Edit {n}'\n"
        "    images: ['https://cdn.example.com/{n}.png']\n    rows:\n" + rows
    )
    monkeypatch.setenv("RUXA_API_KEY", "sk-sandbox-load-test")
    result = run(
        [
            "ruxa-batch",
            "run",
            "m.yaml",
            "--base-url",
            sandbox_process,
            "--concurrency",
            "32",
            "--rate-limit",
            "10000",
            "--poll-interval",
            "0.05",
            "--no-progress",
        ]
    )
    assert result.code == 0, result.err
    with urllib.request.urlopen(sandbox_process + "/_sandbox/counters", timeout=10) as answer:
        counters = json.load(answer)
    assert counters["creates"] == JOBS
    assert counters["downloads"] == JOBS
    for error in (
        "server_errors",
        "garbage",
        "dropped",
        "rate_limited",
        "not_found",
        "duplicate_creates",
        "creates_rejected",
        "unauthorized",
        "invalid",
    ):
        assert counters[error] == 0, error
    summary = json.loads((hermetic / "out" / "load" / "results.json").read_text())["summary"]
    assert summary["succeeded"] == JOBS
    # Requests per job: one create, at least one status query, one download.
    assert summary["requests_sent_this_run"] <= 3.2 * JOBS
