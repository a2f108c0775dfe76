"""Quick guards for the performance benchmark's properties, as counts rather than times."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from helpers import drive, engine_for, write_manifest


def counted_run(folder: Path, server: Any, jobs: int) -> tuple[int, int]:
    """Run ``jobs`` jobs; (SQL statements, HTTP requests) the engine made."""
    folder.mkdir()
    path = write_manifest(folder, jobs)
    engine = engine_for(path, server, folder)
    statements: list[str] = []
    # PRAGMA synchronous switches depend on how transactions interleave: not counted.
    engine.store.conn.set_trace_callback(
        lambda sql: None if sql.startswith("PRAGMA") else statements.append(sql)
    )
    before = server.counters()
    asyncio.run(drive(engine))
    after = server.counters()
    requests = sum(after[name] - before[name] for name in ("creates", "queries", "downloads"))
    return len(statements), requests


def test_requests_and_state_writes_per_job_do_not_grow_with_the_batch(
    hermetic: Path, sandbox_factory
) -> None:
    server = sandbox_factory(generation_time=0.0)
    small_statements, small_requests = counted_run(hermetic / "small", server, 20)
    large_statements, large_requests = counted_run(hermetic / "large", server, 80)
    # One create, one status query, one download per job: nothing wasted.
    assert small_requests == 3 * 20
    assert large_requests == 3 * 80
    # The same fixed number of statements per job, plus a constant per run.
    per_job = (large_statements - small_statements) / 60
    assert per_job == int(per_job)
    assert small_statements - 20 * per_job == large_statements - 80 * per_job
    assert per_job <= 20
