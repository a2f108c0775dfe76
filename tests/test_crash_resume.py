"""A run survives SIGKILL, Ctrl-C and a second concurrent run, and never writes the API key.

Every run here is a real ``python -m ruxa_batch run`` process talking over loopback to the
sandbox, which lives in the test process and so outlives the client it serves: killing the
client at any instant and starting it again must end with every job done, and the sandbox's
own record of creates shows whether any job was paid for twice.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import SandboxFactory, eventually, read_png, write_named_manifest

from ruxa_batch.sandbox import SandboxServer
from ruxa_batch.state import STATE_FILENAME, StateError, StateStore
from ruxa_batch.statuses import AttemptOutcome, JobStatus

# Every test here starts real processes and waits for them: seconds each.
pytestmark = pytest.mark.slow

# Fast enough that a 200-job run takes a few seconds, slow enough that kills land mid-run.
FAST = ["--no-progress", "--poll-interval", "0.05", "--rate-limit", "200", "--concurrency", "16"]
RUN_TIMEOUT = 60.0


@dataclass
class Done:
    """How one process ended."""

    code: int
    out: str
    err: str


def output_dir(folder: Path, name: str) -> Path:
    """The default ``output.dir`` of :func:`write_manifest`'s manifests."""
    return folder / "out" / name


def start(
    server: SandboxServer, folder: Path, *args: str, key: str | None = None
) -> subprocess.Popen[str]:
    """``ruxa-batch run m.yaml --base-url <sandbox> ARGS`` as a real process in ``folder``."""
    command = [sys.executable, "-m", "ruxa_batch", "run", "m.yaml", "--base-url", server.base_url]
    return subprocess.Popen(
        [*command, *args],
        cwd=folder,
        env={**os.environ, "RUXA_API_KEY": key or server.api_key},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = RUN_TIMEOUT) -> Done:
    """Wait for ``process`` (killing it if it overstays ``timeout``); its exit and output."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"the run did not end within {timeout:g} s; stderr:\n{err}") from None
    return Done(process.returncode, out, err)


def kill(process: subprocess.Popen[str]) -> Done:
    """SIGKILL ``process`` (no chance to clean up) and collect what it printed."""
    process.kill()
    return finish(process, timeout=10)


def commands(folder: Path, *lines: list[str], env: dict[str, str]) -> list[Done]:
    """``ruxa-batch`` command lines as real processes in ``folder``, all started at once (each
    only reads the state); how each ended, in order."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "ruxa_batch", *args],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in lines
    ]
    return [finish(process) for process in processes]


def canonical(request: Any) -> str:
    """One string per distinct request body (model + input)."""
    return json.dumps(request, sort_keys=True)


def sandbox_groups(server: SandboxServer) -> dict[str, list[dict[str, Any]]]:
    """The sandbox's tasks grouped by request body, each group in creation order."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    ordered = sorted(enumerate(server.tasks()), key=lambda pair: (pair[1]["createTime"], pair[0]))
    for _, task in ordered:
        groups[canonical(task["request"])].append(task)
    return dict(groups)


def recorded_tasks(state_file: Path) -> dict[str, str]:
    """Every task ID in the state file, with its recorded state."""
    with closing(StateStore(state_file, readonly=True)) as store:
        states = dict(store.conn.execute("SELECT task_id, state FROM tasks").fetchall())
        assert set(states) == store.all_task_ids()
    return states


def job_requests(state_file: Path) -> dict[str, str]:
    """Each job's request body (canonical form) by identity key."""
    with closing(StateStore(state_file, readonly=True)) as store:
        rows = store.conn.execute("SELECT key, request FROM jobs").fetchall()
    return {key: canonical(json.loads(request)) for key, request in rows}


def creates_after_recorded(server: SandboxServer, state_file: Path) -> list[str]:
    """Sandbox tasks created for a request after a task ID for that request had been recorded.

    A recorded task that later failed (or timed out) legitimately allows a new attempt.
    """
    recorded = recorded_tasks(state_file)
    violations = []
    for tasks in sandbox_groups(server).values():
        holder: str | None = None
        for task in tasks:
            if holder is not None:
                violations.append(f"{task['taskId']} was created after {holder} was recorded")
            state = recorded.get(task["taskId"])
            if holder is None and state is not None and state not in ("fail", "timeout"):
                holder = task["taskId"]
    return violations


def results_json(folder: Path) -> dict[str, Any]:
    """The ``results.json`` written into ``folder``."""
    document: dict[str, Any] = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    return document


@dataclass(frozen=True)
class Snapshot:
    """What a state file says at one moment, read without disturbing the run that writes it."""

    run: int  # the latest run's id (0: no run yet)
    created: int  # creates whose task ID is recorded, by every run
    # (job key, attempt) of the creates the latest run sent and saw no answer to (yet)
    sending: tuple[tuple[str, int], ...]
    unfinished: int  # jobs not succeeded


def snapshot(state_file: Path) -> Snapshot | None:
    """The state file's :class:`Snapshot`; None while the first run has not created it yet."""
    try:
        with closing(StateStore(state_file, readonly=True)) as store:
            run = store.conn.execute("SELECT COALESCE(MAX(run_id), 0) FROM runs").fetchone()[0]
            (created,) = store.conn.execute(
                "SELECT COUNT(*) FROM attempts WHERE outcome = ?", (AttemptOutcome.CREATED,)
            ).fetchone()
            sending = store.conn.execute(
                "SELECT job_key, attempt FROM attempts WHERE outcome = ? AND run_id = ?",
                (AttemptOutcome.SENDING, run),
            ).fetchall()
            (unfinished,) = store.conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE status != ?", (JobStatus.SUCCEEDED,)
            ).fetchone()
    except (sqlite3.Error, StateError):
        return None  # not created, or not migrated yet
    return Snapshot(run, created, tuple((key, attempt) for key, attempt in sending), unfinished)


def in_flight(state_file: Path, run: int, target: int) -> bool:
    """Whether the state shows run number ``run`` with a create unanswered, once ``target``
    tasks are recorded. Creates left "sending" by the run killed before do not count."""
    state = snapshot(state_file)
    return (
        state is not None and state.run == run and state.created >= target and bool(state.sending)
    )


def test_sigkill_at_random_moments_then_resume(
    hermetic: Path, sandbox_factory: SandboxFactory
) -> None:
    # Every request takes 0.05 s on the server, so a create spends that long between leaving
    # and its answer being recorded: a kill while the state shows it "sending" lands there.
    server = sandbox_factory(generation_time=0.3, latency=0.05, seed=20260401)
    write_named_manifest(hermetic, "crash", 200)
    out = output_dir(hermetic, "crash")
    state_file = out / STATE_FILENAME
    # Each kill comes once a random number of tasks is recorded (so the runs die at different
    # stages of the batch) and the run being killed has a create on the wire. The targets leave
    # at least 50 creates to go, so there is always one to catch.
    rng = random.Random(1)
    targets = sorted(rng.sample(range(5, 150), 5))
    outcomes = []
    lost_answers = 0  # kills after which the API turned out to hold a task the state lacks
    for number, target in enumerate(targets, start=1):
        process = start(server, hermetic, *FAST)

        def moment(
            process: subprocess.Popen[str] = process, number: int = number, target: int = target
        ) -> bool:
            return process.poll() is not None or in_flight(state_file, number, target)

        try:
            seen = eventually(moment, timeout=RUN_TIMEOUT)
            assert seen and process.poll() is None, (
                f"run {number} ended (or never got to {target} tasks) without a create of its "
                "own seen in flight"
            )
        finally:
            kill(process)
        after = snapshot(state_file)
        assert after is not None and after.run == number
        # The kill interrupted work: jobs were left, and this run's creates were unanswered.
        assert after.unfinished > 0, after
        assert after.sending, f"run {number} had every create answered before the kill: {after}"
        # A first attempt still "sending" whose request the sandbox then receives (its latency
        # still running) proves that the create had left when the run died.
        requests = job_requests(state_file)
        first_tries = {requests[key] for key, attempt in after.sending if attempt == 1}
        if first_tries and eventually(
            lambda first_tries=first_tries: bool(first_tries & set(sandbox_groups(server))),
            timeout=1.0,
        ):
            lost_answers += 1
        outcomes.append(
            f"killed with {after.created} tasks recorded, {len(after.sending)} creates unanswered"
        )
    assert lost_answers > 0, "no kill fell between a create reaching the API and its answer"

    server.update(latency=0.0)  # no more kills: the last run just finishes the batch
    final = finish(start(server, hermetic, *FAST))
    assert final.code == 0, final.err
    # A download cut by a kill left its temporary file; the next run removed it.
    assert list(out.rglob("*.part")) == []

    document = results_json(out)
    jobs = document["jobs"]
    assert [job["id"] for job in jobs] == [f"job-{index:03d}" for index in range(200)]
    assert [job["id"] for job in jobs if job["status"] != "succeeded"] == []
    with closing(StateStore(state_file, readonly=True)) as store:
        records = store.job_records()
        assert {record.status for record in records.values()} == {"succeeded"}
        # fail_rate is 0: every job got exactly the one recorded task that it kept.
        for job in jobs:
            tasks = store.tasks_for(job["key"])
            assert [task["task_id"] for task in tasks] == [job["task_id"]], job["id"]
            assert tasks[0]["state"] == "success"
            record = records[job["key"]]
            assert len(job["files"]) == 1 and list(record.files) == job["files"]
            for name, digest in zip(job["files"], record.sha256, strict=True):
                data = (out / name).read_bytes()
                read_png(data)
                assert hashlib.sha256(data).hexdigest() == digest, name

    # The key property: once a task ID for a request is on disk, that request is never sent again.
    assert creates_after_recorded(server, state_file) == []

    # Every sandbox task belongs to a job; a job with several tasks lost a create's answer to a
    # kill, and the results must flag it as a possible duplicate.
    requests = job_requests(state_file)
    key_of = {request: key for key, request in requests.items()}
    groups = sandbox_groups(server)
    assert set(groups) == set(requests.values())
    duplicated = {key_of[request] for request, tasks in groups.items() if len(tasks) > 1}
    flagged = {job["key"] for job in jobs if job["possible_duplicate"]}
    assert duplicated, "no job has two tasks, although creates were lost to kills"
    assert duplicated <= flagged, "jobs with two tasks that are not flagged possible_duplicate"
    assert document["summary"]["possible_duplicates"] == len(flagged)
    extra = server.counters()["creates"] - 200
    assert server.counters()["duplicate_creates"] == extra
    print(
        f"\nkills: {outcomes}; sandbox creates: {server.counters()['creates']} for 200 jobs; "
        f"jobs with more than one task: {len(duplicated)}; flagged possible_duplicate: "
        f"{len(flagged)}"
    )


def test_ctrl_c_saves_state_and_results_then_resume(
    hermetic: Path, sandbox_factory: SandboxFactory
) -> None:
    server = sandbox_factory(generation_time=1.0, seed=7)
    write_named_manifest(hermetic, "interrupt", 60)
    out = output_dir(hermetic, "interrupt")
    state_file = out / STATE_FILENAME
    # 20 requests/s: some jobs have a task when Ctrl-C comes, most do not yet.
    process = start(server, hermetic, *FAST, "--rate-limit", "20")
    started = time.monotonic()
    assert eventually(lambda: server.counters()["creates"] >= 5, timeout=20), "no creates"
    time.sleep(max(0.0, 0.7 - (time.monotonic() - started)))
    creates_at_ctrl_c = server.counters()["creates"]
    process.send_signal(signal.SIGINT)
    done = finish(process, timeout=10)
    sent_after = server.counters()["creates"] - creates_at_ctrl_c

    assert done.code == 130, done.err
    assert "interrupted: the state is saved; run the same command again to continue" in done.err
    with (out / "results.csv").open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == [
        "id", "variant", "take", "status", "task_id", "prompt", "images", "image_size",
        "output_format", "result_urls", "files", "error", "failure", "attempts", "possible_duplicate", "submitted_at",
        "finished_at", "key", "model", "resolution",
    ]  # fmt: skip
    assert [row["id"] for row in rows] == [f"job-{index:03d}" for index in range(60)]
    assert {row["status"] for row in rows} - {"succeeded"}, "every job succeeded before Ctrl-C"
    assert len(results_json(out)["jobs"]) == 60
    # "Stop sending": only the creates already on the wire (at most --concurrency 16) may
    # still reach the API; jobs still queued for a create must not be submitted after Ctrl-C.
    assert sent_after <= 16, (
        f"{sent_after} creates reached the API after Ctrl-C ({creates_at_ctrl_c} before it)"
    )

    with closing(StateStore(state_file, readonly=True)) as store:
        had_task = {key: r.task_id for key, r in store.job_records().items() if r.task_id}
    assert 0 < len(had_task) < 60
    creates_before = server.counters()["creates"]

    server.update(generation_time=0.05)  # the rest of the batch need not take its time
    again = finish(start(server, hermetic, *FAST))
    assert again.code == 0, again.err
    # Exactly one new task per job that had none; none for a job that had one.
    assert server.counters()["creates"] - creates_before == 60 - len(had_task)
    assert creates_after_recorded(server, state_file) == []
    jobs = results_json(out)["jobs"]
    assert {job["status"] for job in jobs} == {"succeeded"}
    for job in jobs:
        if job["key"] in had_task:
            assert job["task_id"] == had_task[job["key"]], job["id"]
    print(
        f"\njobs with a task at Ctrl-C: {len(had_task)}; sandbox creates before the rerun: "
        f"{creates_before}; duplicate creates: {server.counters()['duplicate_creates']}"
    )


def test_second_ctrl_c_exits_at_once(hermetic: Path, sandbox_factory: SandboxFactory) -> None:
    # Every request takes a second to answer, so a graceful stop waits for the ones in flight:
    # the second Ctrl-C must cut that wait short.
    server = sandbox_factory(generation_time=1.0, seed=3, latency=1.0)
    write_named_manifest(hermetic, "twice", 60)
    process = start(server, hermetic, *FAST, "--rate-limit", "20")
    assert eventually(lambda: server.counters()["creates"] >= 1, timeout=20), "no creates"
    pressed = time.monotonic()
    process.send_signal(signal.SIGINT)
    time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    done = finish(process, timeout=10)
    elapsed = time.monotonic() - pressed

    assert done.code == 130, done.err
    assert elapsed < 0.9, f"took {elapsed:.2f} s to exit after two Ctrl-C"
    # Leaving at once must not cost anything: the next run finishes the batch.
    # Requests the sandbox still holds when the process leaves make their tasks a moment later
    # (a lost answer each: the next run flags it); let them land before the next run starts.
    time.sleep(1.2)
    server.update(latency=0.0, generation_time=0.05)
    again = finish(start(server, hermetic, *FAST))
    assert again.code == 0, again.err
    state_file = output_dir(hermetic, "twice") / STATE_FILENAME
    assert creates_after_recorded(server, state_file) == []


def test_second_concurrent_run_is_refused(hermetic: Path, sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(generation_time=2.5, seed=5)
    write_named_manifest(hermetic, "locked", 3)
    state_file = output_dir(hermetic, "locked") / STATE_FILENAME
    first = start(server, hermetic, *FAST)
    try:

        def all_recorded() -> bool:
            try:
                return len(recorded_tasks(state_file)) == 3
            except (sqlite3.Error, StateError):
                return False  # not created or not migrated yet

        assert eventually(all_recorded, timeout=20), "the first run never recorded its tasks"
        asked = time.monotonic()
        second = finish(start(server, hermetic, *FAST), timeout=20)
        waited = time.monotonic() - asked

        assert second.code == 2, second.err
        assert f"another ruxa-batch run (pid {first.pid}) is using" in second.err
        assert waited < 5.0, f"the refused run took {waited:.1f} s"
        assert first.poll() is None, "the first run ended while the second was refused"
        assert server.counters()["creates"] == 3
    finally:
        kill(first)

    # The OS dropped the killed run's lock: the next run is not blocked, and it watches the
    # recorded tasks to the end instead of creating new ones.
    third = finish(start(server, hermetic, *FAST))
    assert third.code == 0, third.err
    assert server.counters()["creates"] == 3
    jobs = results_json(output_dir(hermetic, "locked"))["jobs"]
    assert {job["status"] for job in jobs} == {"succeeded"}


def key_forms(key: str) -> dict[str, bytes]:
    """The key as text and in the encodings it could hide in (base64 at each alignment)."""
    raw = key.encode()
    forms = {
        "plain": raw,
        "hex": raw.hex().encode(),
        "sha256": hashlib.sha256(raw).hexdigest().encode(),
    }
    for shift in range(3):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            encoded = encode(b"\0" * shift + raw)
            # Keep only the characters that depend on the key's bytes alone: they appear in the
            # encoding of any text holding the key at this alignment ("Bearer <key>" included).
            first = 4 if shift else 0
            forms[f"{name}+{shift}"] = encoded[first : (len(encoded) // 4 - 1) * 4]
    return forms


def find_key(forms: dict[str, bytes], data: bytes) -> list[str]:
    """The names of the key's forms found in ``data``."""
    return [name for name, form in forms.items() if form in data]


def test_api_key_never_written_anywhere(hermetic: Path, sandbox_factory: SandboxFactory) -> None:
    key = "sk-test-" + "".join(
        random.SystemRandom().choices("abcdefghjkmnpqrstuvwxyz23456789", k=24)
    )
    server = sandbox_factory(generation_time=0.5, seed=11, api_key=key)
    write_named_manifest(hermetic, "secret", 20)
    env = {**os.environ, "RUXA_API_KEY": key}
    forms = key_forms(key)
    outputs: list[tuple[str, Done]] = []

    # Killed mid-run first, so the write-ahead log and shared memory file are there to read.
    process = start(server, hermetic, *FAST, "--rate-limit", "20", "--verbose", key=key)
    assert eventually(lambda: server.counters()["creates"] >= 5, timeout=20), "no creates"
    outputs.append(("killed run", kill(process)))
    state_file = output_dir(hermetic, "secret") / STATE_FILENAME
    leftovers = {path.name for path in state_file.parent.iterdir()}
    assert {STATE_FILENAME, STATE_FILENAME + "-wal"} <= leftovers, leftovers
    scanned_mid_run = {
        path.name: find_key(forms, path.read_bytes())
        for path in state_file.parent.iterdir()
        if path.is_file()
    }
    assert {name: found for name, found in scanned_mid_run.items() if found} == {}

    outputs.append(("run", finish(start(server, hermetic, *FAST, "--verbose", key=key))))
    assert outputs[-1][1].code == 0, outputs[-1][1].err
    lines = (
        ["status", "m.yaml"],
        ["status", "m.yaml", "--format", "json"],
        ["results", "m.yaml"],
        ["results", "m.yaml", "--format", "json"],
        ["results", "m.yaml", "--format", "json", "-o", "exported.json"],
        ["plan", "m.yaml"],
    )
    for args, done in zip(lines, commands(hermetic, *lines, env=env), strict=True):
        assert done.code == 0, (args, done.err)
        outputs.append((" ".join(args), done))
    assert "20 succeeded" in outputs[2][1].out

    found = {}
    scanned = 0
    # The whole hermetic tree: the work folder, HOME and TMPDIR (where a crash log would go).
    for path in sorted(hermetic.parent.rglob("*")):
        if path.is_file():
            scanned += 1
            hits = find_key(forms, path.read_bytes())
            if hits:
                found[str(path.relative_to(hermetic.parent))] = hits
    for label, done in outputs:
        for stream, text in (("stdout", done.out), ("stderr", done.err)):
            hits = find_key(forms, text.encode())
            if hits:
                found[f"{label} {stream}"] = hits
    assert found == {}
    assert scanned >= 20 + 4  # pictures, state, results, manifest: the scan did see the files


def test_kill_while_creates_wait_for_the_rate_limiter_is_not_ambiguous(
    hermetic: Path, sandbox_factory: SandboxFactory
) -> None:
    """A create still queued behind the rate limiter when the run dies never left the machine:
    the next run must neither call it a possible duplicate nor, with --at-most-once, make its
    job ``uncertain`` (only creates that may have reached the API are ambiguous)."""
    server = sandbox_factory(generation_time=0.3, seed=9)
    write_named_manifest(hermetic, "queued", 40)
    state_file = output_dir(hermetic, "queued") / STATE_FILENAME
    # 10 requests/s: when the kill comes, most jobs are still waiting for their turn to create.
    process = start(server, hermetic, *FAST, "--rate-limit", "10", "--at-most-once")
    assert eventually(lambda: server.counters()["creates"] >= 3, timeout=20), "no creates"
    kill(process)
    again = finish(start(server, hermetic, *FAST, "--at-most-once"))
    assert again.code in (0, 1), again.err

    # Uncertain jobs are not resubmitted, so a request of theirs in the sandbox came from the
    # killed run. At most --concurrency (16) creates can have been on the wire at the kill.
    received = set(sandbox_groups(server))
    requests = job_requests(state_file)
    jobs = results_json(output_dir(hermetic, "queued"))["jobs"]
    never_sent = [
        job["id"]
        for job in jobs
        if job["status"] == "uncertain" and requests[job["key"]] not in received
    ]
    flagged_never_sent = [
        job["id"]
        for job in jobs
        if job["possible_duplicate"] and requests[job["key"]] not in received
    ]
    assert len(never_sent) <= 16, (
        f"{len(never_sent)} of 40 jobs became uncertain (and {len(flagged_never_sent)} possible "
        "duplicates) although the API never received their create: their attempt was recorded "
        "as 'sending' while the create still waited for the rate limiter"
    )


def test_part_files_of_a_killed_run_are_removed_by_the_next_run(
    run, hermetic: Path, sandbox_factory: SandboxFactory, monkeypatch
) -> None:
    server = sandbox_factory(generation_time=0.05)
    monkeypatch.setenv("RUXA_API_KEY", server.api_key)
    write_named_manifest(hermetic, "parts", 2)
    out = hermetic / "out" / "parts"
    (out / "sub").mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that no longer exists, like a killed run
    stale = [out / f".job-000-1.png.{gone.pid}.part", out / "sub" / f".x-1.jpg.{gone.pid}.part"]
    kept = [
        out / f".job-001-1.png.{os.getppid()}.part",  # its process is alive: another run's
        out / ".notes.part",
        out / f"job-000-1.png.{gone.pid}.part",
        out / f".job-000-1.png.{gone.pid}.part.bak",
        out / "sub" / f".x-1.jpg.{gone.pid}.partial",
    ]
    for path in stale + kept:
        path.write_bytes(b"half a picture")
    result = run(["ruxa-batch", "run", "m.yaml", "--base-url", server.base_url, *FAST])
    assert result.code == 0, result.err
    assert [path.exists() for path in stale] == [False, False]
    assert [path.exists() for path in kept] == [True] * len(kept)


def test_a_lock_file_that_is_a_symlink_is_refused_not_followed(
    run, hermetic: Path, sandbox_factory: SandboxFactory, monkeypatch
) -> None:
    server = sandbox_factory(generation_time=0.05)
    monkeypatch.setenv("RUXA_API_KEY", server.api_key)
    write_named_manifest(hermetic, "lock", 1)
    out = hermetic / "out" / "lock"
    out.mkdir(parents=True)
    victim = hermetic / "precious.txt"
    victim.write_text("keep me\n")
    (out / f"{STATE_FILENAME}.lock").symlink_to(victim)
    result = run(["ruxa-batch", "run", "m.yaml", "--base-url", server.base_url, *FAST])
    assert (result.code, result.err) == (
        2,
        f"error: the lock file out/lock/{STATE_FILENAME}.lock is a symbolic link or not a "
        "regular file; ruxa-batch never writes through one: remove it and run again\n",
    )
    assert victim.read_text() == "keep me\n"
    assert server.counters()["creates"] == 0
    (out / f"{STATE_FILENAME}.lock").unlink()
    (out / f"{STATE_FILENAME}.lock").mkdir()
    result = run(["ruxa-batch", "run", "m.yaml", "--base-url", server.base_url, *FAST])
    assert result.code == 2 and "is a symbolic link or not a regular file" in result.err
