"""`ruxa-batch redo`: a new take of chosen jobs, one task each, the others untouched, the earlier
pictures kept; recorded before anything is sent, so a stopped redo continues and a repeated one
pays nothing."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import eventually, results, run_args, write_manifest

from ruxa_batch import runner

FAST = (
    "--no-progress",
    "--poll-interval",
    "0.05",
    "--rate-limit",
    "1000",
    "--retry-backoff",
    "0.01",
)


def redo_args(server: Any, *selection: str) -> list[str]:
    return ["ruxa-batch", "redo", "m.yaml", *selection, "--base-url", server.base_url, *FAST]


def rows(folder: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in results(folder)["jobs"]}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def first_run(run: Any, folder: Path, server: Any, count: int = 6) -> dict[str, dict[str, Any]]:
    write_manifest(folder, count)
    assert run(run_args(server)).code == 0
    return rows(folder)


def test_redo_by_id_makes_one_new_task_and_keeps_the_earlier_picture(
    run, hermetic, sandbox, keyed
) -> None:
    keyed(sandbox)
    before = first_run(run, hermetic, sandbox)
    out = hermetic / "out" / "t"
    (old_name,) = before["job-001"]["files"]
    old_sha = digest(out / old_name)
    result = run(redo_args(sandbox, "job-001", "--reason", "too dark"))
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "redo: 1 new take"
    assert sandbox.counters()["creates"] == 7  # exactly one more
    after = rows(hermetic)
    assert after["job-001"]["take"] == 2 and after["job-001"]["status"] == "succeeded"
    assert after["job-001"]["task_id"] != before["job-001"]["task_id"]
    assert [after[job]["take"] for job in after if job != "job-001"] == [1] * 5
    assert {job: row["task_id"] for job, row in after.items() if job != "job-001"} == {
        job: row["task_id"] for job, row in before.items() if job != "job-001"
    }
    # The earlier take's picture is kept, byte for byte, in the history folder; the new one
    # has the job's usual name.
    key = before["job-001"]["key"]
    kept = out / "history" / "take-1" / key[:12] / old_name
    assert digest(kept) == old_sha
    assert digest(out / old_name) != old_sha
    (history,) = after["job-001"]["history"]
    assert history == {
        "take": 1,
        "status": "succeeded",
        "task_id": before["job-001"]["task_id"],
        "files": [f"history/take-1/{key[:12]}/{old_name}"],
        "error": None,
        "finished_at": before["job-001"]["finished_at"],
        "reason": "too dark",
    }
    # Every take, on request.
    listed = run(["ruxa-batch", "results", "m.yaml", "--all-takes", "--format", "json"])
    takes = [(job["id"], job["take"]) for job in json.loads(listed.out)["jobs"]]
    assert takes.count(("job-001", 1)) == 1 and takes.count(("job-001", 2)) == 1
    assert len(takes) == 7
    page = (out / "report.html").read_text()
    assert '<figure class="take" title="redone: too dark">' in page
    csv_header = run(["ruxa-batch", "results", "m.yaml"]).out.splitlines()[0]
    assert csv_header.startswith("id,variant,take,status,")


def test_redo_by_glob_status_and_file(run, hermetic, sandbox_factory, keyed) -> None:
    server = keyed(sandbox_factory(fail_rate=0.5, fail_code="500", seed=3))
    write_manifest(hermetic, 12)
    run(run_args(server, "--max-attempts", "1"))
    failed = sorted(job for job, row in rows(hermetic).items() if row["status"] == "failed")
    assert 0 < len(failed) < 12
    server.update(fail_rate=0.0)
    creates = server.counters()["creates"]

    by_status = run(redo_args(server, "--status", "failed"))
    assert by_status.code == 0, by_status.err
    assert server.counters()["creates"] == creates + len(failed)
    assert all(rows(hermetic)[job]["take"] == 2 for job in failed)

    creates = server.counters()["creates"]
    fresh = [job for job in sorted(rows(hermetic)) if job not in failed]
    by_glob = run(redo_args(server, f"{fresh[0][:-1]}[{fresh[0][-1]}]"))  # a one-job glob
    assert by_glob.code == 0, by_glob.err
    assert server.counters()["creates"] == creates + 1

    (hermetic / "pick.txt").write_text(f"# from the report\n{fresh[1]}\n\n{fresh[2]}\n")
    creates = server.counters()["creates"]
    by_file = run(redo_args(server, "--from", "pick.txt"))
    assert by_file.code == 0, by_file.err
    assert server.counters()["creates"] == creates + 2
    assert [rows(hermetic)[job]["take"] for job in fresh[1:3]] == [2, 2]


def test_refusals_record_nothing_and_send_nothing(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    first_run(run, hermetic, sandbox, count=3)
    (hermetic / "m.yaml").write_text(
        (hermetic / "m.yaml").read_text() + "      - {n: '100'}\n"  # a job never run
    )
    creates = sandbox.counters()["creates"]
    cases = {
        ("nope",): "'nope' matches no job of m.yaml",
        ("job-9*",): "'job-9*' matches no job of m.yaml",
        ("job-100",): "job 'job-100' is pending: it has no picture yet to redo (run the batch "
        "first)",
        ("job-000@x",): "'job-000@x' is not a job selector (id, id@variant or a glob)",
        (): "name the jobs to redo: ids, id@variant, globs, --status or --from FILE",
    }
    for selection, message in cases.items():
        result = run(redo_args(sandbox, *selection))
        assert (result.code, result.err) == (2, f"error: {message}\n")
    assert sandbox.counters()["creates"] == creates
    listed = json.loads(run(["ruxa-batch", "results", "m.yaml", "--format", "json"]).out)
    assert [row["take"] for row in listed["jobs"]] == [1, 1, 1, 1]
    # A glob over a never-run job skips it with a note and goes on with the others.
    result = run(redo_args(sandbox, "job-*"))
    assert result.code == 0, result.err
    assert "note: job 'job-100' is pending: it has no picture yet to redo" in result.out
    assert sandbox.counters()["creates"] == creates + 3  # the three; job-100 is left alone


def test_a_repeated_redo_pays_nothing_unless_asked_again(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    first_run(run, hermetic, sandbox, count=2)
    assert run(redo_args(sandbox, "job-000")).code == 0
    creates = sandbox.counters()["creates"]
    again = run(redo_args(sandbox, "job-000"))
    assert (again.code, again.err) == (
        2,
        "error: nothing to redo: job 'job-000' is already a redo (take 2, succeeded); pass "
        "--again for take 3\n",
    )
    assert sandbox.counters()["creates"] == creates
    third = run(redo_args(sandbox, "job-000", "--again"))
    assert third.code == 0, third.err
    assert sandbox.counters()["creates"] == creates + 1
    row = rows(hermetic)["job-000"]
    assert row["take"] == 3 and [take["take"] for take in row["history"]] == [1, 2]
    out = hermetic / "out" / "t"
    assert sorted(p.relative_to(out).as_posix() for p in (out / "history").rglob("*.png")) == [
        f"history/take-1/{row['key'][:12]}/job-000-v1-1.png",
        f"history/take-2/{row['key'][:12]}/job-000-v1-1.png",
    ]


def test_plan_and_cost_of_a_redo_agree_with_what_is_sent(
    run, hermetic, sandbox_factory, keyed
) -> None:
    # The credits run out right after the first run: the redo is recorded, and stops at 402.
    server = keyed(sandbox_factory(credits=5))
    first_run(run, hermetic, server, count=5)
    stopped = run(redo_args(server, "job-00[0-2]"))
    assert stopped.code == 3, stopped.err
    assert server.counters()["creates"] == 5
    plan = json.loads(
        run(["ruxa-batch", "plan", "m.yaml", "--format", "json", "--price-per-task", "0.5"]).out
    )
    assert plan["totals"] == {"redo": 3, "done": 2}
    assert (plan["tasks_to_create"], plan["cost_expected"]) == (3, 1.5)
    assert [job["action"] for job in plan["jobs"]][:3] == ["redo"] * 3
    server.update(credits=None)
    # A plain run carries out the recorded redo: exactly the tasks the plan counted.
    assert run(run_args(server)).code == 0
    assert server.counters()["creates"] == 5 + plan["tasks_to_create"]
    assert [row["take"] for row in rows(hermetic).values()] == [2, 2, 2, 1, 1]


def test_a_redo_killed_after_its_create_continues_without_a_second_task(
    run, hermetic, sandbox_factory
) -> None:
    server = sandbox_factory(generation_time=0.05)
    write_manifest(hermetic, 3)
    env = {**os.environ, "RUXA_API_KEY": server.api_key}
    line = [sys.executable, "-m", "ruxa_batch", *redo_args(server, "job-001")[1:]]
    done = subprocess.run(
        [sys.executable, "-m", "ruxa_batch", *run_args(server)[1:]],
        cwd=hermetic, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    server.update(generation_time=3.0)  # the new take's task runs a while: time to kill
    process = subprocess.Popen(
        line, cwd=hermetic, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert eventually(lambda: server.counters()["creates"] == 4, timeout=20), "no create"
    time.sleep(0.2)  # the task ID is committed right after the answer
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    server.update(generation_time=0.05)
    # The same command again: the take is unfinished, so it is continued, not started anew.
    again = subprocess.run(line, cwd=hermetic, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == "redo: 0 new takes, 1 unfinished take continued"
    assert server.counters()["creates"] == 4
    row = rows(hermetic)["job-001"]
    assert (row["take"], row["status"]) == (2, "succeeded")
    assert row["attempts"] == 2  # tasks the job ever had: one per take


def test_a_big_redo_asks_first_and_a_no_records_nothing(
    run, hermetic, sandbox, keyed, monkeypatch
) -> None:
    keyed(sandbox)
    first_run(run, hermetic, sandbox, count=101)
    creates = sandbox.counters()["creates"]
    asked: list[str] = []
    monkeypatch.setattr(runner, "is_interactive", lambda: True)
    monkeypatch.setattr(builtins, "input", lambda prompt: asked.append(prompt) or "n")
    declined = run(redo_args(sandbox, "job-*", "--max-tasks", "500"))
    assert asked == ["Continue? [y/N] "]
    assert (declined.code, declined.err) == (130, "not confirmed: nothing was sent\n")
    assert "Tasks to create: 101 if each succeeds first time, at most 303 with retries" in (
        declined.out
    )
    assert sandbox.counters()["creates"] == creates
    listed = json.loads(run(["ruxa-batch", "results", "m.yaml", "--format", "json"]).out)
    assert {row["take"] for row in listed["jobs"]} == {1}  # nothing recorded
    assert not (hermetic / "out" / "t" / "history").exists()


def test_no_earlier_picture_is_ever_overwritten_or_lost(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    first_run(run, hermetic, sandbox, count=3)
    out = hermetic / "out" / "t"
    name = "job-000-v1-1.png"
    first = (out / name).read_bytes()
    assert run(redo_args(sandbox, "job-000")).code == 0
    # A new identity under the same id and file name (the prompt edited), then redone too:
    # its take 1 must not land on the first job's take 1.
    text = (hermetic / "m.yaml").read_text().replace("Edit picture", "Retouch picture")
    (hermetic / "m.yaml").write_text(text)
    assert run(run_args(sandbox)).code == 0
    second = (out / name).read_bytes()
    assert run(redo_args(sandbox, "job-000")).code == 0
    kept = sorted(out.glob(f"history/take-1/*/{name}"))
    assert len(kept) == 2 and {path.read_bytes() for path in kept} == {first, second}

    # A picture edited by hand is kept as it is, not overwritten by the new take.
    (out / "job-001-v1-1.png").write_bytes(b"retouched by hand")
    assert run(redo_args(sandbox, "job-001")).code == 0
    assert [p.read_bytes() for p in out.glob("history/take-1/*/job-001-v1-1.png")] == [
        b"retouched by hand"
    ]

    # Killed between moving a picture and the state following: the next redo records it where
    # it is, and the take keeps it.
    row = rows(hermetic)["job-002"]
    moved = out / "history" / "take-1" / row["key"][:12] / "job-002-v1-1.png"
    moved.parent.mkdir(parents=True)
    sha = digest(out / "job-002-v1-1.png")
    (out / "job-002-v1-1.png").rename(moved)
    assert run(redo_args(sandbox, "job-002")).code == 0
    (history,) = rows(hermetic)["job-002"]["history"]
    assert history["files"] == [moved.relative_to(out).as_posix()]
    assert digest(moved) == sha


def test_a_capped_redo_starts_only_the_takes_it_may_pay_for(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    first_run(run, hermetic, sandbox, count=3)
    result = run(redo_args(sandbox, "job-*", "--max-tasks", "1"))
    assert result.code == 0, result.err
    assert (
        "note: 2 more jobs were selected but are over the cap of 1 task (--max-tasks): they keep "
        "their pictures; redo them again later"
    ) in result.out.splitlines()
    assert [row["take"] for row in rows(hermetic).values()] == [2, 1, 1]
    assert all(row["status"] == "succeeded" for row in rows(hermetic).values())
    # The same command again goes on with the next one: the job already redone is left alone.
    again = run(redo_args(sandbox, "job-*", "--max-tasks", "1"))
    assert again.code == 0, again.err
    assert [row["take"] for row in rows(hermetic).values()] == [2, 2, 1]
