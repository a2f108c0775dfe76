"""Hostile answers cost one job, with a one-line reason; the others finish and results are written.

Each attack comes from the suite's own hostile server (:mod:`hostile`), aimed at one job of a
batch by a marker in its prompt.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import KEY, HostileServer, hostile_server

from ruxa_batch.client import RuxaClient
from ruxa_batch.decide import Options
from ruxa_batch.engine import Engine, EngineOptions
from ruxa_batch.manifest import load_manifest
from ruxa_batch.ratelimit import RateLimiter
from ruxa_batch.state import StateStore
from ruxa_batch.statuses import JobStatus
from ruxa_batch.timing import ManualTimer

API_PREFIXES = ("/api/v1/tasks/create", "/api/v1/tasks/query/", "/files/")


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    monkeypatch.setenv("RUXA_API_KEY", KEY)
    with hostile_server() as server:
        yield server


def write_batch(folder: Path, healthy: int, attacks: list[str]) -> None:
    rows = [f"      - {{n: 'ok-{i:02d}', attack: ''}}\n" for i in range(healthy)]
    rows += [
        f"      - {{n: 'bad-{i}', attack: 'attack={mode}'}}\n" for i, mode in enumerate(attacks)
    ]
    (folder / "m.yaml").write_text(
        "version: 1\nname: t\njobs:\n  - id: 'job-{n}'\n    prompt: 'Edit picture {n} {attack}'\n"
        "    images: ['https://cdn.example.com/{n}.png']\n    rows:\n" + "".join(rows)
    )


def run_args(server: HostileServer, *extra: str) -> list[str]:
    return [
        "ruxa-batch",
        "run",
        "m.yaml",
        "--base-url",
        server.base_url,
        "--no-progress",
        "--poll-interval",
        "0.01",
        "--retry-backoff",
        "0.001",
        "--max-attempts",
        "1",
        "--rate-limit",
        "1000",
        *extra,
    ]


def jobs(folder: Path) -> dict[str, dict[str, Any]]:
    document = json.loads((folder / "out" / "t" / "results.json").read_text())
    return {row["id"]: row for row in document["jobs"]}


def outside_the_api(server: HostileServer) -> list[str]:
    return [path for path in server.paths if not path.startswith(API_PREFIXES)]


# mode -> (status of the attacked job, start of its error, possible duplicate)
ATTACKS = {
    "gzip-broken": (
        "running",
        "left for a later run: downloads keep failing: the answer from a result file is damaged",
        False,
    ),
    "url-bracket": ("failed", "the task succeeded but result URL 'http://[::1' is unusable", False),
    "url-port-letters": ("failed", "the task succeeded but result URL", False),
    "url-port-big": ("failed", "the task succeeded but result URL", False),
    "url-no-host": ("failed", "the task succeeded but result URL 'http:///x.png'", False),
    "url-bad-idn": ("failed", "the task succeeded but result URL", False),
    "no-urls": ("failed", "the task succeeded but its resultJson lists no resultUrls", False),
    "urls-not-list": ("failed", "the task succeeded but its resultJson has no resultUrls", False),
    "resultjson-broken": ("failed", "the task succeeded but its resultJson is not valid", False),
    "deep-result": ("failed", "the task succeeded but its resultJson is not valid JSON", False),
    "nul-id": ("pending", "left for a later run: the create answer's task ID is not valid", True),
    "path-id": ("pending", "left for a later run: the create answer's task ID is not valid", True),
    "deep-create": ("pending", "left for a later run: HTTP 200 answer is not JSON", True),
    "huge-create": ("pending", "left for a later run: the answer is 8,388,6", True),
    "huge-query": (
        "running",
        "left for a later run: status queries keep failing: the answer is 8,388,6",
        False,
    ),
    "gateway-504": ("succeeded", "", True),
    "redirect": ("succeeded", "", False),
    "redirect-loop": ("failed", "result URL redirects more than 5 times", False),
    "redirect-ftp": ("failed", "result URL redirects to an address that is not http(s)", False),
}


@pytest.mark.parametrize("mode", sorted(ATTACKS))
def test_one_hostile_answer_costs_one_job_with_a_reason(run, hermetic, hostile, mode) -> None:
    write_batch(hermetic, 4, [mode])
    first = run(run_args(hostile))
    status, error, duplicate = ATTACKS[mode]
    assert first.code == {"succeeded": 0, "failed": 1}.get(status, 4), first.err
    rows = jobs(hermetic)
    bad = rows["job-bad-0"]
    assert (bad["status"], bool(bad["possible_duplicate"])) == (status, duplicate)
    assert (bad["error"] or "").startswith(error), bad["error"]
    assert "\n" not in (bad["error"] or "")
    assert all(rows[f"job-ok-{i:02d}"]["status"] == "succeeded" for i in range(4))
    assert outside_the_api(hostile) == []
    # The bad value is not kept in a way that poisons the next run.
    again = run(run_args(hostile))
    assert again.code in (0, 1, 4), again.err
    assert all(jobs(hermetic)[f"job-ok-{i:02d}"]["status"] == "succeeded" for i in range(4))


def test_forty_jobs_one_poisoned_download_the_other_39_succeed(run, hermetic, hostile) -> None:
    write_batch(hermetic, 39, ["gzip-broken"])
    result = run(run_args(hostile))
    assert result.code == 4, result.err  # nothing failed: the download is left for later
    statuses = [row["status"] for row in jobs(hermetic).values()]
    assert statuses.count("succeeded") == 39
    assert result.err.splitlines()[-1] == (
        "1 job left for a later run (see the results file for each reason); run the same "
        "command again to continue"
    )


def test_the_same_task_id_for_two_creates_is_not_trusted(run, hermetic, hostile) -> None:
    write_batch(hermetic, 2, ["same-id", "same-id"])
    run(run_args(hostile, "--concurrency", "1"))
    rows = jobs(hermetic)
    first, second = rows["job-bad-0"], rows["job-bad-1"]
    assert first["status"] == "succeeded" and first["task_id"] == "task_shared"
    assert second["status"] == "pending" and second["possible_duplicate"]
    assert second["error"] == (
        "left for a later run: the API answered with task ID task_shared, which another job has"
    )


def test_a_gzip_bomb_stops_at_the_download_cap(run, hermetic, hostile) -> None:
    write_batch(hermetic, 1, ["gzip-bomb"])
    run(run_args(hostile, "--max-download-mb", "1"))
    bad = jobs(hermetic)["job-bad-0"]
    assert bad["status"] == "failed"
    assert bad["error"] == "result file is over the 1,048,576-byte limit"


# -- on a manual clock: attacks on time ---------------------------------------------------------


def drive(folder: Path, server: HostileServer, timer: ManualTimer, **client: Any) -> dict[str, Any]:
    manifest = load_manifest(folder / "m.yaml")
    store = StateStore.open_for_run(folder / "state.sqlite")
    options = EngineOptions(
        output_dir=folder / "out",
        decisions=Options(max_attempts=2),
        poll_interval=1.0,
        task_timeout=900.0,
        max_download_bytes=10**6,
    )

    async def main() -> None:
        limiter = RateLimiter(1000, timer=timer)
        async with RuxaClient(
            base_url=server.base_url, api_key=KEY, concurrency=4, limiter=limiter, **client
        ) as http:
            await Engine(manifest, store, http, options, timer=timer).run()

    try:
        asyncio.run(main())
        return {record.id: record for record in store.job_records().values()}
    finally:
        store.close()


def test_a_task_the_api_forgets_is_given_up_only_after_a_minute_and_flagged(
    hermetic, hostile
) -> None:
    write_batch(hermetic, 1, ["gone"])
    timer = ManualTimer()
    records = drive(hermetic, hostile, timer)
    bad = records["job-bad-0"]
    assert bad.status == JobStatus.FAILED and bad.attempts == 2
    assert bad.error == "the API no longer knows this task (404)"
    assert bad.possible_duplicate  # the forgotten task may still run and be billed
    queries = [p for p in hostile.paths if p.startswith("/api/v1/tasks/query/task_0000")]
    assert len(queries) >= 2 * 4  # more than three quick 404s per task
    assert timer.now() - 1000.0 >= 2 * 60.0


def test_a_retry_after_of_a_day_leaves_the_job_for_later_instead_of_pausing_the_run(
    hermetic, hostile
) -> None:
    write_batch(hermetic, 3, ["retry-after-day"])
    timer = ManualTimer()
    records = drive(hermetic, hostile, timer)
    bad = records["job-bad-0"]
    assert bad.status == JobStatus.RUNNING
    assert bad.error == (
        "left for a later run: the server asked to wait 86400 s (Retry-After), longer than the "
        "600 s allowed"
    )
    assert all(records[f"job-ok-{i:02d}"].status == JobStatus.SUCCEEDED for i in range(3))
    assert max(timer.slept) <= 600.0


@pytest.mark.parametrize("mode", ["trickle-query", "trickle-file"])
def test_an_answer_that_trickles_in_meets_a_total_deadline(hermetic, hostile, mode) -> None:
    write_batch(hermetic, 1, [mode])
    records = drive(hermetic, hostile, ManualTimer(), answer_deadline=0.2, download_deadline=0.2)
    bad = records["job-bad-0"]
    assert bad.status == JobStatus.RUNNING
    assert "within 0.2 s" in (bad.error or ""), bad.error
    assert records["job-ok-00"].status == JobStatus.SUCCEEDED
