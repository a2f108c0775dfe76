"""The engine on a manual clock: backoff, Retry-After and timeouts without sleeping for real.

The sandbox still answers over a real loopback socket; only the engine's waiting is simulated,
so a test of a 900-second timeout or of a server's Retry-After takes milliseconds.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from helpers import SandboxFactory

from ruxa_batch.client import RuxaClient
from ruxa_batch.decide import Options
from ruxa_batch.engine import Engine, EngineOptions, Events
from ruxa_batch.jobs import Job
from ruxa_batch.manifest import load_manifest
from ruxa_batch.ratelimit import RateLimiter
from ruxa_batch.state import JobRecord, StateStore
from ruxa_batch.statuses import JobStatus, StopReason
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


class HaltOnSubmit(Events):
    """Stops the run as soon as a task is created, the way a Ctrl-C right after a create does."""

    engine: Engine | None = None

    def job_submitted(self, job: Job, task_id: str) -> None:
        assert self.engine is not None
        self.engine.halt(StopReason.INTERRUPTED)


def start_then_stop(folder: Path, server: Any, *, created_ago: float) -> None:
    """A first run that creates the task and stops; the task's create is then ``created_ago``
    seconds in the past, as if the run had stopped that long ago."""
    manifest = load_manifest(manifest_of(folder, 1))
    store = StateStore.open_for_run(folder / "state.sqlite")
    events = HaltOnSubmit()
    options = EngineOptions(
        output_dir=folder / "out",
        decisions=Options(max_attempts=1),
        poll_interval=3.0,
        task_timeout=900.0,
        max_download_bytes=10**6,
    )

    async def main() -> None:
        timer = ManualTimer()
        client = RuxaClient(
            base_url=server.base_url,
            api_key=server.api_key,
            concurrency=4,
            limiter=RateLimiter(1000, timer=timer),
        )
        async with client:
            engine = Engine(manifest, store, client, options, events=events, timer=timer)
            events.engine = engine
            await engine.run()

    try:
        asyncio.run(main())
    finally:
        store.close()
    then = datetime.now(timezone.utc) - timedelta(seconds=created_ago)
    with sqlite3.connect(folder / "state.sqlite") as db:
        db.execute("UPDATE tasks SET created_at = ?", (then.strftime("%Y-%m-%dT%H:%M:%SZ"),))
    db.close()


def test_task_timeout_counts_from_the_create_across_a_resume(
    hermetic: Path, sandbox_factory: SandboxFactory
) -> None:
    server = sandbox_factory(generation_time=3600)
    start_then_stop(hermetic, server, created_ago=600)
    assert server.counters()["creates"] == 1
    timer = ManualTimer()
    records = run_engine(hermetic, server, 1, timer, task_timeout=900.0, max_attempts=1)
    (record,) = records.values()
    assert (record.status, record.error) == (JobStatus.FAILED, "task unfinished after 900 s")
    # About 300 s were left of the task's 900, not a fresh 900 (the stamp has whole seconds).
    assert 300.0 <= timer.now() - 1000.0 <= 335.0
    assert server.counters()["creates"] == 1


def test_a_resumed_task_past_its_timeout_is_queried_once_first(
    hermetic: Path, sandbox_factory: SandboxFactory
) -> None:
    server = sandbox_factory(generation_time=0.05)
    start_then_stop(hermetic, server, created_ago=7200)
    time.sleep(0.1)  # the task has finished on the server while no run was watching
    timer = ManualTimer()
    queries = server.counters()["queries"]
    records = run_engine(hermetic, server, 1, timer, task_timeout=900.0, max_attempts=1)
    (record,) = records.values()
    assert record.status == JobStatus.SUCCEEDED
    assert server.counters()["queries"] == queries + 1
    assert server.counters()["creates"] == 1


def test_task_age_is_measured_from_the_recorded_create() -> None:
    record = JobRecord(
        key="k",
        id="j",
        variant=1,
        status=JobStatus.RUNNING,
        attempts=1,
        possible_duplicate=False,
        task_id="t",
        result_urls=(),
        files=(),
        sha256=(),
        error=None,
        submitted_at="2025-03-01T11:59:00Z",
        finished_at=None,
        open_attempt=None,
        task_created_at="2025-03-01T12:00:00Z",
    )
    noon = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    assert record.task_age(now=noon + timedelta(minutes=10, seconds=1)) == 601.0
    assert record.task_age(now=noon - timedelta(seconds=5)) == 0.0  # a clock set back
    assert replace(record, task_created_at=None).task_age(now=noon) == 0.0
