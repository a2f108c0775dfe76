"""The state file: migrations, the write-ahead steps, and queries that stay fast as it grows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruxa_batch.state import MIGRATIONS, Mark, StateError, StateStore, _strings, chunked
from ruxa_batch.statuses import AttemptOutcome, JobStatus, TaskState


def test_migrations_are_numbered_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    StateStore(path).close()
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations")]
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert mode == "wal"


def test_an_old_state_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        for statement in MIGRATIONS[0].split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO schema_migrations VALUES (1, 'then')")
    with StateStore(path) as store:
        assert store.schema_version() == len(MIGRATIONS)


def test_sizes_are_kept_and_a_moved_picture_is_recorded(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.sqlite") as store:
        store.ensure_jobs([("k1", "a", 1, "{}")])
        store.record_files("k1", ["a-1.png", "a-2.png"], ["0" * 64, "1" * 64], [10, 20])
        store.rename_file("k1", "a-1.png", "b-1.png")
        record = store.job_records()["k1"]
    assert (record.files, record.sizes) == (("b-1.png", "a-2.png"), (10, 20))


def test_a_state_file_without_sizes_is_read_without_migrating(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        for version, script in enumerate(MIGRATIONS[:2], start=1):
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (version,))
        db.execute(
            "INSERT INTO jobs (key, id, variant, request, status, files, sha256, updated_at) "
            "VALUES ('k1', 'a', 1, '{}', ?, '[\"a-1.png\"]', ?, 'then')",
            (JobStatus.SUCCEEDED, f'["{"0" * 64}"]'),
        )
    with StateStore(path, readonly=True) as store:
        record = store.job_records()["k1"]
    assert (record.files, record.sizes) == (("a-1.png",), ())


def test_a_newer_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    StateStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_migrations VALUES (99, 'future')")
    with pytest.raises(StateError, match=r"s\.sqlite was written by a newer ruxa-batch; upgrade"):
        StateStore(path)
    with pytest.raises(StateError, match=r"s\.sqlite was written by a newer ruxa-batch; upgrade"):
        StateStore(path, readonly=True)


def test_every_query_uses_an_index(tmp_path: Path) -> None:
    """No statement the engine runs per event may scan a whole table (that is quadratic)."""
    store = StateStore(tmp_path / "s.sqlite")
    plans: list[str] = []
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    store.ensure_jobs([("k1", "a", 1, "{}"), ("k2", "b", 1, "{}")])
    attempt = store.begin_attempt("k1")
    store.record_task("k1", attempt, "task-1")
    store.update_task("task-1", TaskState.SUCCESS, result_urls=["https://x/1.png"])
    store.record_files("k1", ["a.png"], ["0" * 64], [123])
    store.rename_file("k1", "a.png", "b.png")
    store.close_attempt("k2", store.begin_attempt("k2"), AttemptOutcome.AMBIGUOUS, "dropped")
    store.set_status("k2", JobStatus.PENDING)
    store.task_state("task-1")
    store.records_of(["k1", "k2"])
    store.marks_of(["k1", "k2"])
    store.conn.set_trace_callback(None)
    # The trace shows each statement with its values bound in, so it is explained as it ran.
    checked = [s for s in statements if s.split()[0] in ("UPDATE", "SELECT", "DELETE")]
    for statement in checked:
        for row in store.conn.execute("EXPLAIN QUERY PLAN " + statement):
            plans.append(f"{row[-1]}  <-  {statement[:60]}")
    store.close()
    assert len(checked) >= 10, checked  # the trace did see the steps
    # The schema's own table (a handful of rows) is read once per store.
    scans = [p for p in plans if p.startswith("SCAN ") and not p.startswith("SCAN sqlite_master")]
    assert not scans, scans


def test_job_records_are_read_again_only_after_a_write(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.sqlite")
    store.ensure_jobs([("k1", "a", 1, "{}")])
    reads: list[str] = []
    store.conn.set_trace_callback(
        lambda sql: reads.append(sql) if sql.startswith("SELECT jobs.key") else None
    )
    first = store.job_records()
    second = store.job_records()
    assert first == second and len(reads) == 1
    second.clear()  # a caller's copy: the store's own is untouched
    store.set_status("k1", JobStatus.FAILED, error="boom")
    third = store.job_records()
    assert len(reads) == 2
    assert third["k1"].status == JobStatus.FAILED and third["k1"].error == "boom"
    store.close()


def test_records_read_by_key_are_the_records_read_whole(tmp_path: Path) -> None:
    """A pass over a big batch reads records a few hundred keys at a time: the same records."""
    store = StateStore(tmp_path / "s.sqlite")
    keys = [f"k{number:04d}" for number in range(1200)]
    store.ensure_jobs((key, f"job-{key}", 1, "{}") for key in keys)
    store.begin_attempt("k0001")  # open: its create's fate unknown
    attempt = store.begin_attempt("k0002")
    store.record_task("k0002", attempt, "task-2")
    store.update_task("task-2", TaskState.SUCCESS, result_urls=["https://x/1.png", "https://x/2"])
    store.record_files("k0002", ["é 1.png", 'a"b.png'], ["0" * 64, "1" * 64], [12, 34])
    store.set_status("k0003", JobStatus.FAILED, error="boom")
    whole = store.job_records()
    wanted = [*keys[::-1], "absent"]
    assert store.records_of(wanted) == {key: whole[key] for key in keys}
    assert store.records_of([]) == {}
    assert store.marks_of(wanted) == {
        key: Mark(record.id, record.variant, record.status, record.open_attempt is not None)
        for key, record in whole.items()
    }
    assert whole["k0002"].files == ("é 1.png", 'a"b.png') and whole["k0002"].sizes == (12, 34)
    assert whole["k0001"].open_attempt == 1 and whole["k0002"].tasks_total == 1
    store.close()


def test_chunked_keeps_order_and_every_item() -> None:
    assert list(chunked(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []


@given(st.lists(st.one_of(st.text(), st.integers(min_value=0))))
def test_list_columns_read_back_as_written(values: list[str | int]) -> None:
    import json

    for text in (json.dumps(values), json.dumps(values, ensure_ascii=False)):
        assert _strings(text) == tuple(values)


def test_the_tally_counts_what_the_records_say(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.sqlite")
    keys = [f"k{number:04d}" for number in range(1100)]
    store.ensure_jobs((key, f"job-{key}", 1, "{}") for key in keys)
    for number, key in enumerate(keys):
        if number % 3 == 0:
            store.set_status(
                key, JobStatus.FAILED, error="boom", possible_duplicate=number % 2 == 0
            )
        elif number % 5 == 0:
            store.set_status(key, JobStatus.UNCERTAIN, possible_duplicate=True)
    asked = [*keys[:1000], "never-run-1", "never-run-2"]  # two jobs the state has never seen
    counts, duplicates = store.tally(asked)
    records = store.job_records()
    expected = {status: 0 for status in JobStatus}
    for key in asked:
        expected[records[key].status if key in records else JobStatus.PENDING] += 1
    assert counts == expected and counts[JobStatus.FAILED] == 334
    assert duplicates == sum(records[key].possible_duplicate for key in keys[:1000])
    store.close()
