"""The sandbox holds up under the load the engine puts on it (2,000 jobs, concurrency 32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SandboxProcess

pytestmark = pytest.mark.slow

JOBS = 2000


def test_2000_jobs_at_concurrency_32(
    run, hermetic: Path, sandbox_process: SandboxProcess, monkeypatch
) -> None:
    rows = "".join(f"      - {{n: '{i:05d}'}}\n" for i in range(JOBS))
    (hermetic / "m.yaml").write_text(
        "version: 1\nname: load\njobs:\n  - id: 'j-{n}'\n    prompt: 'Edit {n}'\n"
        "    images: ['https://cdn.example.com/{n}.png']\n    rows:\n" + rows
    )
    monkeypatch.setenv("RUXA_API_KEY", sandbox_process.api_key)
    result = run(
        [
            "ruxa-batch",
            "run",
            "m.yaml",
            "--base-url",
            sandbox_process.base_url,
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
    counters = sandbox_process.counters()
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
