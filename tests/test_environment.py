"""When the machine gets in the way: a full disk, a read-only folder, a damaged state file.

Each is one line and exit 74, never a traceback; what was recorded stays recorded and the same
command continues once the cause is gone. Tests run as root in CI, where permissions do not stop
writes: a real read-only folder is made with ``chattr +i`` there (skipped when the file system
cannot), and the disk fills through SQLite's own page limit or an ``OSError(ENOSPC)`` raised
where a file is written.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import results, run_args, write_manifest

from ruxa_batch import client as client_module
from ruxa_batch.state import StateStore

STATE = Path("out") / "t" / ".ruxa-batch.sqlite"


def crash_logs(hermetic: Path) -> list[Path]:
    return sorted((hermetic.parent / "tmp").glob("ruxa-batch-crash-*.log"))


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` refuse new files: by its mode, or as root (whom modes do not stop) by the
    immutable attribute; skip the test where neither works."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    elif (
        shutil.which("chattr")
        and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    ):
        undo = ["chattr", "-i", str(folder)]
    else:
        pytest.skip("cannot make a folder read-only here (root without chattr +i)")
    try:
        probe = folder / ".probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("the folder is still writable")
        yield
    finally:
        subprocess.run(undo, check=True)


def test_a_full_disk_while_recording_stops_the_run_and_the_next_run_continues(
    run, hermetic, sandbox, monkeypatch
) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    write_manifest(hermetic, 60)
    original = StateStore.ensure_jobs

    def then_fill_the_disk(self: StateStore, jobs: Any) -> None:
        original(self, jobs)
        # SQLite answers SQLITE_FULL, as on a full disk, once the file would have to grow.
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        self.conn.execute(f"PRAGMA max_page_count = {pages + 2}")

    monkeypatch.setattr(StateStore, "ensure_jobs", then_fill_the_disk)
    result = run(run_args(sandbox))
    assert (result.code, result.err) == (
        74,
        f"error: cannot write the state file {STATE}: the disk is full; free some space and run "
        "the same command again (everything recorded so far is kept)\n",
    )
    assert crash_logs(hermetic) == []
    made = sandbox.counters()["creates"]
    db = sqlite3.connect(hermetic / STATE)
    recorded = {row[0] for row in db.execute("SELECT task_id FROM tasks")}
    (unanswered,) = db.execute("SELECT COUNT(*) FROM attempts WHERE outcome = 'sending'").fetchone()
    db.close()
    # Some tasks were recorded before the disk filled; the creates whose answer could not be
    # recorded (if any were in flight then) are still open attempts (written ahead), so the
    # next run knows about them.
    assert 0 < len(recorded) <= made <= len(recorded) + unanswered
    assert len(recorded) < 60

    monkeypatch.setattr(StateStore, "ensure_jobs", original)
    again = run(run_args(sandbox))
    assert again.code == 0, again.err
    document = results(hermetic)
    assert document["summary"]["succeeded"] == 60
    assert document["summary"]["possible_duplicates"] == unanswered
    # Every recorded task was kept and polled; only the jobs without one were submitted.
    assert recorded <= {job["task_id"] for job in document["jobs"]}
    assert sandbox.counters()["creates"] == made + 60 - len(recorded)


def test_a_damaged_page_is_a_clear_error_at_query_time(run, hermetic, sandbox, monkeypatch) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    write_manifest(hermetic, 60)
    assert run(run_args(sandbox)).code == 0
    state = hermetic / STATE
    db = sqlite3.connect(state)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
    db.close()
    assert root > 1  # the schema on page 1 stays whole: the file opens, the query fails
    with state.open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xa5" * page_size)
    damaged = (
        f"error: the state file {STATE} is damaged (database disk image is malformed); keep a "
        f"copy and try `sqlite3 {STATE} .recover`: starting a new state file would submit every "
        "job again\n"
    )
    for command in (["status", "m.yaml"], ["plan", "m.yaml"]):
        result = run(["ruxa-batch", *command])
        assert (result.code, result.err) == (74, damaged), command
    result = run(run_args(sandbox))
    assert (result.code, result.err) == (74, damaged)
    assert crash_logs(hermetic) == []


def test_a_full_disk_during_a_download_leaves_the_job_for_the_next_run(
    run, hermetic, sandbox, monkeypatch
) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    write_manifest(hermetic, 4)

    async def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    save = client_module._save
    monkeypatch.setattr(client_module, "_save", disk_full)
    result = run(run_args(sandbox))
    assert result.code == 4, result.err
    jobs = results(hermetic)["jobs"]
    assert [(job["status"], job["error"]) for job in jobs] == [
        ("running", f"left for a later run: cannot save {job['id']}-v1-1.png: the disk is full")
        for job in jobs
    ]
    assert not list((hermetic / "out" / "t").glob("*.png"))
    assert not list((hermetic / "out" / "t").glob(".*.part"))

    monkeypatch.setattr(client_module, "_save", save)
    again = run(run_args(sandbox))
    assert again.code == 0, again.err
    assert results(hermetic)["summary"]["succeeded"] == 4
    assert sandbox.counters()["creates"] == 4


def test_a_full_disk_when_writing_the_results_is_one_line(
    run, hermetic, sandbox, monkeypatch
) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    write_manifest(hermetic, 3)
    replace = os.replace

    def full_for_results(source: Any, target: Any) -> None:
        if str(target).endswith("results.csv"):
            raise OSError(errno.ENOSPC, "No space left on device")
        replace(source, target)

    monkeypatch.setattr(os, "replace", full_for_results)
    result = run(run_args(sandbox))
    assert (result.code, result.err) == (
        74,
        "error: cannot write out/t/results.csv: the disk is full; free some space and run the "
        "command again\n",
    )
    assert not [p.name for p in (hermetic / "out" / "t").iterdir() if p.name.startswith(".res")]
    monkeypatch.setattr(os, "replace", replace)
    again = run(run_args(sandbox))
    assert again.code == 0, again.err
    assert sandbox.counters()["creates"] == 3
    assert results(hermetic)["summary"]["tasks_created_this_run"] == 0


def test_status_results_and_report_on_a_read_only_folder(
    run, hermetic, sandbox, monkeypatch
) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    write_manifest(hermetic, 3)
    assert run(run_args(sandbox)).code == 0
    out = hermetic / "out" / "t"
    with read_only(out):
        status = run(["ruxa-batch", "status", "m.yaml"])
        assert (status.code, status.err) == (0, "")
        assert status.out.startswith("t: 3 jobs: 3 succeeded,")
        listed = run(["ruxa-batch", "results", "m.yaml"])
        assert listed.code == 0 and len(listed.out.splitlines()) == 4
        report = run(["ruxa-batch", "report", "m.yaml"])
        assert (report.code, report.err) == (
            74,
            "error: cannot write out/t/report.html: the file system or folder is read-only; make "
            "it writable or choose another place (-o FILE writes it elsewhere)\n",
        )
        elsewhere = run(["ruxa-batch", "report", "m.yaml", "-o", "report.html"])
        assert elsewhere.code == 0, elsewhere.err
        again = run(run_args(sandbox))
        assert (again.code, again.err) == (
            74,
            f"error: cannot write the state file {STATE}: the file system or folder is "
            "read-only; make it writable or choose another state file with --state\n",
        )
    assert crash_logs(hermetic) == []


def test_a_read_only_output_folder_before_the_first_run(
    run, hermetic, sandbox, monkeypatch
) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    write_manifest(hermetic, 1)
    out = hermetic / "out" / "t"
    out.mkdir(parents=True)
    with read_only(out):
        result = run(run_args(sandbox))
    assert (result.code, result.err) == (
        74,
        "error: cannot write the state file in out/t: the file system or folder is read-only; "
        "make it writable or choose another state file with --state\n",
    )
    assert sandbox.counters()["creates"] == 0
