"""Shards: ``run --shard I/N`` drives a fixed share of the jobs, and ``merge`` combines the
output folders of the shards into one, refusing anything that is not one whole split."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from helpers import SandboxFactory, SandboxProcess, write_manifest

from ruxa_batch.manifest import load_manifest
from ruxa_batch.shards import Shard, manifest_revision, parse_shard, shard_of, split
from ruxa_batch.state import STATE_FILENAME, held

FAST = ["--no-progress", "--poll-interval", "0.05", "--rate-limit", "1000"]
FAST += ["--retry-backoff", "0.01", "--concurrency", "16"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("0/3", "error: --shard 0/3: I must be from 1 to 3 (shards are 1-based)"),
        ("4/3", "error: --shard 4/3: I must be from 1 to 3 (shards are 1-based)"),
        ("a/b", "error: --shard 'a/b': expected I/N, shard I of N, e.g. --shard 2/4"),
        ("1/0", "error: --shard 1/0: N must be from 1 to 10,000"),
        ("2", "error: --shard '2': expected I/N, shard I of N, e.g. --shard 2/4"),
    ],
)
@pytest.mark.parametrize("command", ["run", "plan", "status", "results", "report"])
def test_a_bad_shard_is_one_line(run, hermetic, command, given, message) -> None:
    write_manifest(hermetic, 3)
    result = run(["ruxa-batch", command, "m.yaml", "--shard", given])
    assert (result.code, result.err.strip()) == (2, message)


def test_parse_shard() -> None:
    assert parse_shard("2/4") == Shard(2, 4)
    assert str(parse_shard(" 1 / 1 ")) == "1/1"
    assert Shard(2, 4).state_name == ".ruxa-batch.shard-2-of-4.sqlite"


def test_every_job_is_in_exactly_one_shard_and_adding_jobs_moves_none(hermetic) -> None:
    before = load_manifest(write_manifest(hermetic, 200))
    after = load_manifest(write_manifest(hermetic, 210))
    assert len(after.jobs) == len(before.jobs) + 10
    for count in (1, 2, 3, 4, 7):
        parts = split(before, count)
        keys = [job.key for part in parts for job in part.jobs]
        assert sorted(keys) == sorted(job.key for job in before.jobs)  # each once
        moved = [
            job.id
            for job in before.jobs
            if shard_of(job.key, count)
            != next(
                index
                for index, part in enumerate(split(after, count), start=1)
                if job.key in {j.key for j in part.jobs}
            )
        ]
        assert moved == []
    assert manifest_revision(before) != manifest_revision(after)


def test_plan_shows_a_shard_and_the_split(run, hermetic) -> None:
    write_manifest(hermetic, 40, extra="run:\n  price_per_task: 0.5\n")
    manifest = load_manifest(hermetic / "m.yaml")
    sizes = [len(part.jobs) for part in split(manifest, 4)]
    split_plan = run(["ruxa-batch", "plan", "m.yaml", "--shards", "4"])
    assert split_plan.code == 0
    for index, size in enumerate(sizes, start=1):
        cost = f"{size * 0.5:.2f}" if size % 2 else f"{size // 2}"
        assert f"  {index}/4: {size} jobs, {size} tasks to create (at most {3 * size}), cost" in (
            split_plan.out
        ), split_plan.out
        assert cost in split_plan.out
    one = run(["ruxa-batch", "plan", "m.yaml", "--shard", "2/4", "--format", "json"])
    document = json.loads(one.out)
    assert document["shard"] == "2/4"
    assert document["jobs_in_manifest"] == 40
    assert document["tasks_to_create"] == sizes[1] == len(document["jobs"])
    assert document["revision"] == manifest_revision(manifest)


def _start(folder: Path, server: Any, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ruxa_batch", *args],
        cwd=folder,
        env={**os.environ, "RUXA_API_KEY": server.api_key},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def _jobs(folder: Path, name: str = "results.json") -> dict[str, dict[str, Any]]:
    document = json.loads((folder / name).read_text())
    return {row["key"]: row for row in document["jobs"]}


def _hashes(folder: Path, rows: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    return {
        key: [hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in row["files"]]
        for key, row in rows.items()
    }


@pytest.mark.slow
def test_four_shard_processes_then_merge(
    run, hermetic, sandbox_process: SandboxProcess, sandbox_factory: SandboxFactory
) -> None:
    write_manifest(hermetic, 400)
    folders = []
    for index in range(1, 5):  # as on four machines: each its own copy and output folder
        folder = hermetic / f"machine-{index}"
        folder.mkdir()
        shutil.copy(hermetic / "m.yaml", folder / "m.yaml")
        folders.append(folder)
    runs = [
        _start(folder, sandbox_process, "run", "m.yaml", "--base-url", sandbox_process.base_url,
               "--shard", f"{index}/4", *FAST)
        for index, folder in enumerate(folders, start=1)
    ]  # fmt: skip
    ended = [_finish(process) for process in runs]
    assert [code for code, _, _ in ended] == [0, 0, 0, 0], ended
    counters = sandbox_process.counters()
    assert (counters["creates"], counters["duplicate_creates"]) == (400, 0)
    outputs = [folder / "out" / "t" for folder in folders]
    for index, output in enumerate(outputs, start=1):
        assert (output / f".ruxa-batch.shard-{index}-of-4.sqlite").is_file()
        assert not (output / STATE_FILENAME).exists()
        # Its own results and report, under names of its own (shards may share a folder).
        assert (output / f"report.shard-{index}-of-4.html").is_file()
        assert not (output / "results.json").exists()
        own = _jobs(output, f"results.shard-{index}-of-4.json")
        assert all(shard_of(key, 4) == index for key in own)  # its own jobs only
    shard_rows = {
        key: row
        for index, output in enumerate(outputs, start=1)
        for key, row in _jobs(output, f"results.shard-{index}-of-4.json").items()
    }
    assert len(shard_rows) == 400

    # One missing: refused, naming it, and nothing written.
    left_out = [outputs[0], outputs[1], outputs[3]]
    refused = run(["ruxa-batch", "merge", "m.yaml", *left_out, "-o", "three"])
    assert refused.code == 2
    assert refused.err.startswith("error: shard 3/4 missing (no .ruxa-batch.shard-I-of-4.sqlite")
    assert "--partial" in refused.err
    assert not (hermetic / "three").exists()
    assert not [path for path in hermetic.iterdir() if path.name.startswith(".three")]

    # --partial: merged, with that shard's jobs pending.
    partial = run(["ruxa-batch", "merge", "m.yaml", *left_out, "-o", "three", "--partial"])
    assert partial.code == 0, partial.err
    rows = _jobs(hermetic / "three")
    pending = {key for key, row in rows.items() if row["status"] == "pending"}
    assert pending == {key for key in rows if shard_of(key, 4) == 3}
    assert all(rows[key]["status"] == "succeeded" for key in rows.keys() - pending)

    # Overlapping: the same shard twice.
    twice = hermetic / "twice"
    shutil.copytree(outputs[0], twice)
    overlap = run(["ruxa-batch", "merge", "m.yaml", *outputs, twice, "-o", "x"])
    assert overlap.code == 2 and "error: shard 1/4 is there twice" in overlap.err
    # ... or of another split.
    other = hermetic / "other-split"
    other.mkdir()
    source = outputs[1] / ".ruxa-batch.shard-2-of-4.sqlite"
    shutil.copy(source, other / ".ruxa-batch.shard-2-of-3.sqlite")
    with closing(sqlite3.connect(other / ".ruxa-batch.shard-2-of-3.sqlite")) as conn, conn:
        conn.execute("UPDATE meta SET value = '2/3' WHERE key = 'shard'")
    mixed = run(["ruxa-batch", "merge", "m.yaml", *outputs, other, "-o", "x"])
    assert mixed.code == 2 and "are of different splits" in mixed.err
    # Another manifest revision (a job added since the shards ran).
    (hermetic / "newer").mkdir()
    write_manifest(hermetic / "newer", 401)
    stale = run(["ruxa-batch", "merge", "newer/m.yaml", *outputs, "-o", "x"])
    assert stale.code == 2 and "ran manifest revision" in stale.err
    assert not (hermetic / "x").exists()

    # Complete: into the manifest's own output folder.
    merged = run(["ruxa-batch", "merge", "m.yaml", *outputs])
    assert merged.code == 0, merged.err
    assert "merged 4 of 4 shards into out/t: 400 jobs (400 succeeded); 400 pictures" in merged.out
    target = hermetic / "out" / "t"
    rows = _jobs(target)
    assert rows == shard_rows  # every row as its shard recorded it: ids, tasks, files
    by_shard = {}
    for index, output in enumerate(outputs, start=1):
        by_shard.update(_hashes(output, _jobs(output, f"results.shard-{index}-of-4.json")))
    assert _hashes(target, rows) == by_shard
    assert run(["ruxa-batch", "verify", "m.yaml"]).code == 0
    assert (target / "report.html").is_file()
    status = run(["ruxa-batch", "status", "m.yaml", "--format", "json"])
    assert json.loads(status.out)["counts"]["succeeded"] == 400

    # The merged folder is an ordinary one: a run resumes from it and sends nothing.
    again = _finish(
        _start(hermetic, sandbox_process, "run", "m.yaml", "--base-url",
               sandbox_process.base_url, *FAST)
    )  # fmt: skip
    assert again[0] == 0, again
    assert "tasks created this run: 0;" in again[1]
    assert sandbox_process.counters()["creates"] == 400

    # A single run of the same manifest gives the same jobs, statuses and file names.
    single = hermetic / "single"
    single.mkdir()
    shutil.copy(hermetic / "m.yaml", single / "m.yaml")
    server = sandbox_factory(seed=1)
    alone = _finish(_start(single, server, "run", "m.yaml", "--base-url", server.base_url, *FAST))
    assert alone[0] == 0, alone
    single_rows = _jobs(single / "out" / "t")
    shape = ("id", "variant", "status", "files", "prompt", "images", "attempts")
    assert {key: [row[c] for c in shape] for key, row in single_rows.items()} == {
        key: [row[c] for c in shape] for key, row in rows.items()
    }


def test_merge_refuses_a_folder_without_shards_and_a_used_destination(
    run, hermetic, keyed, sandbox
) -> None:
    keyed(sandbox)
    write_manifest(hermetic, 6)
    base = ["--base-url", sandbox.base_url, *FAST]
    for index in (1, 2):
        assert run(["ruxa-batch", "run", "m.yaml", "--shard", f"{index}/2", *base]).code == 0
    (hermetic / "empty").mkdir()
    none = run(["ruxa-batch", "merge", "m.yaml", "empty"])
    assert none.code == 2
    assert none.err.strip() == (
        "error: empty holds no shard state file (.ruxa-batch.shard-I-of-N.sqlite, written by "
        "`run --shard I/N`)"
    )
    # Both shards in one output folder (one machine): merged in place.
    first = run(["ruxa-batch", "merge", "m.yaml", "out/t"])
    assert first.code == 0, first.err
    assert (hermetic / "out" / "t" / STATE_FILENAME).is_file()
    assert (
        json.loads(run(["ruxa-batch", "status", "m.yaml", "--format", "json"]).out)["counts"][
            "succeeded"
        ]
        == 6
    )
    again = run(["ruxa-batch", "merge", "m.yaml", "out/t"])
    assert again.code == 2 and "already holds a state file" in again.err
    (hermetic / "busy").mkdir()
    (hermetic / "busy" / "mine.txt").write_text("keep me")
    busy = run(["ruxa-batch", "merge", "m.yaml", "out/t", "-o", "busy"])
    assert busy.code == 2 and "busy is not empty" in busy.err
    # A shard's state refuses a run of the whole batch, and another shard's run.
    state = ["--state", "out/t/.ruxa-batch.shard-1-of-2.sqlite"]
    whole = run(["ruxa-batch", "run", "m.yaml", *state, *base])
    assert whole.code == 2 and "holds the state of shard 1/2, not of the whole batch" in whole.err
    wrong = run(["ruxa-batch", "run", "m.yaml", "--shard", "2/2", *state, *base])
    assert wrong.code == 2 and "holds the state of shard 1/2, not of shard 2/2" in wrong.err


def shard_line(server: Any, *args: str) -> list[str]:
    return ["ruxa-batch", "run", "m.yaml", "--base-url", server.base_url, *FAST, *args]


def test_no_run_pays_again_beside_another_scopes_state(run, hermetic, sandbox, keyed) -> None:
    """A whole-batch run in a folder of shard states would start from nothing, and a shard run
    beside the merged state would too: both are refused, nothing sent."""
    keyed(sandbox)
    write_manifest(hermetic, 12)
    assert run(shard_line(sandbox, "--shard", "1/2")).code == 0
    created = sandbox.counters()["creates"]
    whole = run(shard_line(sandbox))
    assert whole.code == 2
    assert whole.err.strip() == (
        "error: out/t holds the states of shards 1/2 and no state of the whole batch: a run "
        "without --shard would start from nothing and pay again for their jobs; run with "
        "--shard I/N, or merge them first (ruxa-batch merge MANIFEST out/t)"
    )
    redo = run(["ruxa-batch", "redo", "m.yaml", "job-*", "--base-url", sandbox.base_url, *FAST])
    assert redo.code == 2 and "holds the states of shards 1/2" in redo.err
    assert run(shard_line(sandbox, "--shard", "2/2")).code == 0
    created = sandbox.counters()["creates"]
    assert run(["ruxa-batch", "merge", "m.yaml", "out/t"]).code == 0
    again = run(shard_line(sandbox, "--shard", "2/2"))
    assert again.code == 2
    assert again.err.strip() == (
        "error: out/t holds the state of the whole batch (merged, or run without --shard): a "
        "run of shard 2/2 beside it would pay again for jobs it has; run without --shard, or "
        "give the shard its own output folder"
    )
    assert run(shard_line(sandbox)).code == 0  # the merged state: nothing left to create
    assert sandbox.counters()["creates"] == created == 12


def test_merge_waits_for_no_running_shard_and_keeps_other_files(
    run, hermetic, sandbox, keyed
) -> None:
    keyed(sandbox)
    write_manifest(hermetic, 6)
    for index in (1, 2):
        assert run(shard_line(sandbox, "--shard", f"{index}/2")).code == 0
    running = hermetic / "out" / "t" / Shard(1, 2).state_name
    with held(running):  # as a run of shard 1/2 holds it
        refused = run(["ruxa-batch", "merge", "m.yaml", "out/t"])
    assert refused.code != 0 and "is using" in refused.err
    assert not (hermetic / "out" / "t" / STATE_FILENAME).exists()
    # A picture the shards lack, with a file of the user's under its name: kept, merge refused.
    pictures = sorted((hermetic / "out" / "t").glob("job-*.png"))
    pictures[0].unlink()
    (hermetic / "out" / "t" / pictures[0].name).write_bytes(b"MINE")
    kept = run(["ruxa-batch", "merge", "m.yaml", "out/t"])
    assert kept.code == 2 and "already exists with other bytes" in kept.err
    assert (hermetic / "out" / "t" / pictures[0].name).read_bytes() == b"MINE"


def test_plan_without_shard_in_a_folder_of_shard_states_says_so(
    run, hermetic, sandbox, keyed
) -> None:
    keyed(sandbox)
    write_manifest(hermetic, 4)
    assert run(shard_line(sandbox, "--shard", "1/2")).code == 0
    planned = run(["ruxa-batch", "plan", "m.yaml"])
    assert planned.code == 0
    assert planned.err.strip() == (
        "note: out/t holds the states of shards 1/2: plan with --shard I/N or --shards N, or "
        "merge them first"
    )
