"""Quick guards for the performance benchmark's properties, as counts rather than times."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import drive, engine_for, write_manifest


@dataclass(frozen=True)
class Counts:
    """What one run of ``jobs`` jobs cost."""

    jobs: int
    requests: int  # creates, status queries and downloads the sandbox received
    statements: int  # SQL statements the engine ran (PRAGMAs left out)
    # SQLite virtual-machine instructions executed: the work the statements did, which grows
    # with the rows each statement visits (a table scan costs instructions per row).
    instructions: int


def counted_run(folder: Path, server: Any, jobs: int) -> Counts:
    """Run ``jobs`` jobs against ``server``; what the run cost."""
    folder.mkdir()
    path = write_manifest(folder, jobs)
    engine = engine_for(path, server, folder)
    statements: list[str] = []
    instructions = [0]

    def count() -> int:
        instructions[0] += 1
        return 0  # go on

    # PRAGMA synchronous switches depend on how transactions interleave: not counted.
    engine.store.conn.set_trace_callback(
        lambda sql: None if sql.startswith("PRAGMA") else statements.append(sql)
    )
    engine.store.conn.set_progress_handler(count, 1)  # called every instruction
    before = server.counters()
    asyncio.run(drive(engine))
    after = server.counters()
    requests = sum(after[name] - before[name] for name in ("creates", "queries", "downloads"))
    return Counts(jobs, requests, len(statements), instructions[0])


def test_requests_and_state_work_per_job_do_not_grow_with_the_batch(
    hermetic: Path, sandbox_factory
) -> None:
    server = sandbox_factory(generation_time=0.0)
    runs = {jobs: counted_run(hermetic / f"jobs-{jobs}", server, jobs) for jobs in (10, 20, 80)}
    # One create, one status query, one download per job: nothing wasted.
    for jobs, counts in runs.items():
        assert counts.requests == 3 * jobs, counts
    # Statements and SQLite work per job: the cost of a job at 10-20 jobs (the difference of
    # the two runs) must also be the cost of a job at 80, once the per-run constant (opening,
    # planning, writing results) that the small runs imply is taken off. A statement per job
    # per job, or a table scan per job, makes a job dearer in the larger batch.
    for field in ("statements", "instructions"):
        small = (getattr(runs[20], field) - getattr(runs[10], field)) / 10
        constant = getattr(runs[10], field) - 10 * small
        large = (getattr(runs[80], field) - constant) / 80
        assert abs(large - small) <= 0.05 * small, (
            f"{field} per job: {small:.2f} from 10 to 20 jobs, {large:.2f} at 80 "
            f"(per-run constant {constant:.1f}); runs: {runs}"
        )
    assert runs[20].statements - runs[10].statements <= 20 * 10  # at most 20 statements a job
