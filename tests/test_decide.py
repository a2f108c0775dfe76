"""One decision for plan, estimate, confirmation and run: the table, and a kill mid-create."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import SandboxFactory
from hypothesis import given
from hypothesis import strategies as st

from ruxa_batch.decide import IDLE, Action, Estimate, Options, decide, settled
from ruxa_batch.models import Prices
from ruxa_batch.state import JobRecord
from ruxa_batch.statuses import JobStatus, TaskState


def record(status: JobStatus, **fields: Any) -> JobRecord:
    values: dict[str, Any] = {
        "key": "k",
        "id": "job",
        "variant": 1,
        "status": status,
        "attempts": 0,
        "possible_duplicate": False,
        "task_id": None,
        "result_urls": (),
        "files": (),
        "sha256": (),
        "error": None,
        "submitted_at": None,
        "finished_at": None,
        "open_attempt": None,
        "task_state": None,
    }
    values.update(fields)
    return JobRecord(**values)


PLAIN = Options(max_attempts=3)


@pytest.mark.parametrize(
    ("name", "job", "options", "action", "expected", "most"),
    [
        ("new job", None, PLAIN, Action.SUBMIT, 1, 3),
        ("pending", record(JobStatus.PENDING, attempts=1), PLAIN, Action.SUBMIT, 1, 2),
        (
            "lost create",
            record(JobStatus.RUNNING, open_attempt=1),
            PLAIN,
            Action.RESUBMIT,
            1,
            3,
        ),
        (
            "lost create, at most once",
            record(JobStatus.RUNNING, open_attempt=1),
            Options(max_attempts=3, at_most_once=True),
            Action.KEEP_UNCERTAIN,
            0,
            0,
        ),
        (
            "lost create, at most once, retry uncertain",
            record(JobStatus.RUNNING, open_attempt=2, attempts=1),
            Options(max_attempts=3, at_most_once=True, retry_uncertain=True),
            Action.RESUBMIT,
            1,
            2,
        ),
        (
            "running task",
            record(JobStatus.RUNNING, task_id="t", attempts=1, task_state=TaskState.GENERATING),
            PLAIN,
            Action.POLL,
            0,
            2,
        ),
        (
            "task failed, next attempt not sent yet",
            record(JobStatus.RUNNING, task_id="t", attempts=1, task_state=TaskState.FAIL),
            PLAIN,
            Action.SUBMIT,
            1,
            2,
        ),
        (
            "succeeded, pictures present",
            record(JobStatus.SUCCEEDED, files=("a.png",)),
            PLAIN,
            Action.DONE,
            0,
            0,
        ),
        (
            "failed",
            record(JobStatus.FAILED, attempts=3),
            PLAIN,
            Action.KEEP_FAILED,
            0,
            0,
        ),
        (
            "failed, retry failed",
            record(JobStatus.FAILED, attempts=3),
            Options(max_attempts=3, retry_failed=True),
            Action.RETRY,
            1,
            3,
        ),
        ("uncertain", record(JobStatus.UNCERTAIN), PLAIN, Action.KEEP_UNCERTAIN, 0, 0),
        (
            "uncertain, retry uncertain",
            record(JobStatus.UNCERTAIN, attempts=1),
            Options(max_attempts=3, retry_uncertain=True),
            Action.RETRY,
            1,
            3,
        ),
    ],
)
def test_decision_table(
    name: str,
    job: JobRecord | None,
    options: Options,
    action: Action,
    expected: int,
    most: int,
) -> None:
    decision = decide(job, options)
    assert (decision.action, decision.expected_tasks, decision.most_tasks) == (
        action,
        expected,
        most,
    ), name


def test_missing_pictures_are_downloaded_again_unless_downloads_are_off() -> None:
    done = record(JobStatus.SUCCEEDED, files=("a.png",), task_id="t")
    assert decide(done, PLAIN, files_present=lambda r: False).action == Action.DOWNLOAD
    no_download = Options(max_attempts=3, download=False)
    assert decide(done, no_download, files_present=lambda r: False).action == Action.DONE


def test_the_estimate_adds_up_the_decisions() -> None:
    decisions = [decide(None, PLAIN), decide(record(JobStatus.RUNNING, task_id="t"), PLAIN)]
    edit = "google/nano-banana-edit"
    estimate = Estimate.of([(d, edit) for d in decisions], prices=Prices.of(0.5))
    assert (estimate.expected, estimate.at_most) == (1, 6)
    assert estimate.lines()[1] == "Cost at 0.5 per task: expected 0.50, at most 3.00"
    # Under a cap, the first tasks in manifest order are the ones paid for, at their price.
    mixed = [(decide(None, PLAIN), "pro"), (decide(None, PLAIN), edit)]
    capped = Estimate.of(mixed, prices=Prices.of({"pro": 3, edit: 1}), cap=2)
    assert (capped.expected, capped.at_most, capped.uncapped) == (2, 2, 2)
    assert (capped.expected_cost, capped.at_most_cost) == (4.0, 6.0)


@given(
    status=st.sampled_from(list(JobStatus)),
    task_state=st.sampled_from([None, *TaskState]),
    task_id=st.sampled_from([None, "t"]),
    files=st.sampled_from([(), ("a.png",)]),
    present=st.booleans(),
    take=st.integers(min_value=1, max_value=3),
    attempts=st.integers(min_value=0, max_value=4),
    options=st.builds(
        Options,
        max_attempts=st.integers(min_value=1, max_value=4),
        retry_failed=st.booleans(),
        retry_uncertain=st.booleans(),
        at_most_once=st.booleans(),
        download=st.booleans(),
    ),
)
def test_a_settled_status_is_one_decide_leaves_alone(
    status: JobStatus,
    task_state: TaskState | None,
    task_id: str | None,
    files: tuple[str, ...],
    present: bool,
    take: int,
    attempts: int,
    options: Options,
) -> None:
    """The engine skips reading the whole record of a settled job: decide must agree."""
    job = record(
        status, task_state=task_state, task_id=task_id, files=files, take=take, attempts=attempts
    )
    decision = decide(job, options, files_present=lambda r: present)
    if settled(status, options):
        assert decision.action in IDLE
    elif decision.action in IDLE:
        # Left alone for what the record holds (its pictures are in place), not its status.
        assert status == JobStatus.SUCCEEDED and options.download and present


# -- plan and run agree after a kill between a create leaving and its answer -----------------


def write_manifest(folder: Path, count: int) -> None:
    rows = "".join(f"      - {{n: '{i:03d}'}}\n" for i in range(count))
    (folder / "m.yaml").write_text(
        "version: 1\nname: t\njobs:\n  - id: 'job-{n}'\n    prompt: 'Edit picture {n}'\n"
        "    images: ['https://cdn.example.com/{n}.png']\n    rows:\n" + rows
    )


def cli(folder: Path, server: Any, *args: str, base_url: bool = True) -> list[str]:
    command = [sys.executable, "-m", "ruxa_batch", *args]
    if base_url:
        command += ["--base-url", server.base_url, "--no-progress", "--poll-interval", "0.05"]
    return command


def open_creates(state: Path) -> int:
    """Attempts still 'sending' in the state file: creates whose answer is not recorded."""
    if not state.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
            row = db.execute("SELECT COUNT(*) FROM attempts WHERE outcome = 'sending'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


def planned_tasks(folder: Path, server: Any, *flags: str) -> tuple[int, dict[str, int]]:
    done = subprocess.run(
        [sys.executable, "-m", "ruxa_batch", "plan", "m.yaml", "--format", "json", *flags],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    return int(document["tasks_to_create"]), document["totals"]


def creates_of_run(folder: Path, server: Any, env: dict[str, str], *flags: str) -> int:
    before = server.counters()["creates"]
    done = subprocess.run(
        cli(folder, server, "run", "m.yaml", *flags),
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    return int(server.counters()["creates"] - before)


@pytest.mark.slow
@pytest.mark.parametrize("at_most_once", [False, True], ids=["default", "at-most-once"])
def test_plan_counts_the_creates_the_next_run_sends_after_a_kill_mid_create(
    hermetic: Path, sandbox_factory: SandboxFactory, at_most_once: bool
) -> None:
    latency = 1.5  # every create is in flight this long: the kill lands in that window
    server = sandbox_factory(generation_time=0.05, latency=latency, seed=5)
    write_manifest(hermetic, 12)
    env = {**os.environ, "RUXA_API_KEY": server.api_key}
    state = hermetic / "out" / "t" / ".ruxa-batch.sqlite"
    process = subprocess.Popen(
        cli(hermetic, server, "run", "m.yaml", "--rate-limit", "4"),
        cwd=hermetic,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while open_creates(state) == 0:
        assert time.monotonic() < deadline and process.poll() is None, "no create in flight"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    lost = open_creates(state)
    assert lost >= 1  # the kill fell between a create leaving and its answer being recorded
    time.sleep(latency + 0.3)  # requests the sandbox still held make their tasks now
    server.update(latency=0.0)

    flags = ["--at-most-once"] if at_most_once else []
    expected, totals = planned_tasks(hermetic, server, *flags)
    if at_most_once:
        assert totals.get("uncertain") == lost
    else:
        assert totals.get("resubmit") == lost
    sent = creates_of_run(hermetic, server, env, *flags)
    assert sent == expected

    if at_most_once:
        # The uncertain ones are sent only when asked; plan and run still agree.
        expected, totals = planned_tasks(hermetic, server, "--retry-uncertain")
        assert totals == {"retry": lost, "done": 12 - lost}
        assert expected == lost
        assert creates_of_run(hermetic, server, env, "--retry-uncertain") == lost
