"""The engine on a manual clock: backoff, Retry-After and timeouts without sleeping for real.

The sandbox still answers over a real loopback socket; only the engine's waiting is simulated,
so a test of a 900-second timeout or of a server's Retry-After takes milliseconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fixtures_sandbox import SandboxFactory

from ruxa_batch.client import RuxaClient
from ruxa_batch.decide import Options
from ruxa_batch.engine import Engine, EngineOptions
from ruxa_batch.manifest import load_manifest
from ruxa_batch.ratelimit import RateLimiter
from ruxa_batch.state import StateStore
from ruxa_batch.statuses import JobStatus
from ruxa_batch.timing import ManualTimer


def manifest_of(folder: Path, count: int) -> Path:
    rows = "".join(f"      - {{n: '{i:03d}'}}\n" for i in range(count))
    path = folder / "m.yaml"
    path.write_text(
        "version: 1\nname: t\njobs:\n  - id: 'job-{n}'\n    prompt: 'Edit picture {n}'\n"
        "    images: ['https://cdn.example.com/{n}.png']\n    rows:\n" + rows
    )
    return path


def run_engine(
    folder: Path,
    server: Any,
    count: int,
    timer: ManualTimer,
    *,
    limiter: RateLimiter | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run ``count`` jobs against ``server`` on ``timer``; the job records afterwards."""
    manifest = load_manifest(manifest_of(folder, count))
    store = StateStore.open_for_run(folder / "state.sqlite")
    settings: dict[str, Any] = {
        "output_dir": folder / "out",
        "decisions": Options(max_attempts=options.pop("max_attempts", 3)),
        "poll_interval": 3.0,
        "task_timeout": 900.0,
        "max_download_bytes": 10**6,
        **options,
    }

    async def main() -> None:
        client = RuxaClient(
            base_url=server.base_url,
            api_key=server.api_key,
            concurrency=4,
            limiter=limiter or RateLimiter(1000, timer=timer),
        )
        async with client:
            await Engine(manifest, store, client, EngineOptions(**settings), timer=timer).run()

    try:
        asyncio.run(main())
        return {record.id: record for record in store.job_records().values()}
    finally:
        store.close()


def test_a_task_past_its_timeout_counts_as_a_failed_attempt(
    hermetic: Path, sandbox_factory: SandboxFactory
) -> None:
    server = sandbox_factory(generation_time=3600)  # never finishes while the test runs
    timer = ManualTimer()
    records = run_engine(hermetic, server, 1, timer, task_timeout=900.0, max_attempts=2)
    assert {r.status for r in records.values()} == {JobStatus.FAILED}
    assert {r.error for r in records.values()} == {"task unfinished after 900 s"}
    assert {r.attempts for r in records.values()} == {2}
    # Two attempts of 900 simulated seconds each.
    assert timer.now() - 1000.0 >= 1800.0
    # Queries at 3 s, then pauses x1.5 each up to 30 s: at 3, 7.5, 14.25, 24.4, 39.6, 62.3,
    # 92.3 s, then every 30 s until 900 s: 33 per attempt (not 300, one every 3 s).
    assert server.counters()["queries"] == 2 * 33


def test_retry_after_of_a_429_is_waited_exactly_and_costs_no_attempt(
    hermetic: Path, sandbox_factory: SandboxFactory
) -> None:
    server = sandbox_factory(rate_limit=30, generation_time=0.0)
    timer = ManualTimer()
    records = run_engine(hermetic, server, 30, timer, poll_interval=0.05, max_attempts=1)
    limited = server.counters()["rate_limited"]
    assert limited > 0
    assert {r.status for r in records.values()} == {JobStatus.SUCCEEDED}
    assert {r.attempts for r in records.values()} == {1}
    assert server.counters()["creates"] == 30
    # The sandbox asks for whole seconds (Retry-After: 1): every 429 was followed by exactly that
    # wait, and no backoff was invented on top of it.
    assert timer.slept.count(1.0) >= limited


def test_server_errors_back_off_exponentially_then_leave_the_job_for_later(
    hermetic: Path, sandbox_factory: SandboxFactory
) -> None:
    server = sandbox_factory(error_rate=1.0)
    timer = ManualTimer()
    records = run_engine(hermetic, server, 1, timer, backoff_base=2.0)
    (record,) = records.values()
    assert record.status == JobStatus.PENDING
    assert record.error == "left for a later run: HTTP 500 internal server error"
    # 6 tries, 5 pauses: full jitter in the upper half of 2, 4, 8, 16, 30 (the cap).
    pauses = [s for s in timer.slept if s >= 1.0]
    assert len(pauses) == 5
    for pause, ceiling in zip(pauses, (2, 4, 8, 16, 30), strict=True):
        assert ceiling / 2 <= pause <= ceiling


def test_creates_that_can_no_longer_be_sent_leave_without_a_token(
    hermetic: Path, sandbox_factory: SandboxFactory
) -> None:
    """120 jobs capped at 10 tasks, 5 requests/s: the 110 that will not be sent must not each
    wait for a token (they held a run for 26 s, and the status queries behind them)."""
    server = sandbox_factory(generation_time=0.0)
    timer = ManualTimer()
    limiter = RateLimiter(5, timer=timer)
    records = run_engine(
        hermetic, server, 120, timer, limiter=limiter, poll_interval=0.2, max_tasks=10
    )
    statuses = [r.status for r in records.values()]
    assert statuses.count(JobStatus.SUCCEEDED) == 10
    assert statuses.count(JobStatus.PENDING) == 110
    counters = server.counters()
    sent = counters["creates"] + counters["queries"]
    assert limiter.granted == sent  # no token went to a request that was never sent
    assert timer.now() - 1000.0 < sent / 5 + 2  # the run lasts as long as what it sends
