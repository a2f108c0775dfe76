"""The results table (one row per job, in manifest order) and its CSV and JSON files."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from ruxa_batch.errors import cannot_write
from ruxa_batch.jobs import Job, Manifest, display_path
from ruxa_batch.state import JobRecord, TakeRecord, chunked
from ruxa_batch.statuses import JOB_STATUSES, JobStatus

COLUMNS = (
    "id",
    "variant",
    "take",
    "status",
    "task_id",
    "prompt",
    "images",
    "image_size",
    "output_format",
    "result_urls",
    "files",
    "error",
    "failure",
    "attempts",
    "possible_duplicate",
    "submitted_at",
    "finished_at",
    "key",
)
LIST_COLUMNS = ("images", "result_urls", "files")
# A spreadsheet opening the CSV runs a cell that starts with one of these as a formula (OWASP,
# "CSV Injection"); prompts, CSV rows and the API's failMsg are anybody's text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Table:
    """The results of a manifest's jobs, from the state file.

    ``rows`` is any sequence of row dicts; :func:`build_table` gives one that makes each row
    when it is read, so that writing the results of a big batch streams instead of holding
    every row in memory.
    """

    manifest: Manifest
    rows: Sequence[dict[str, Any]]

    def counts(self) -> dict[str, int]:
        """Jobs per status, every status present, by the status's word."""
        found = Counter(row["status"] for row in self.rows)
        return {status.value: found[status] for status in JOB_STATUSES}

    def possible_duplicates(self) -> int:
        """Jobs whose create may have been charged twice."""
        return sum(1 for row in self.rows if row["possible_duplicate"])


# Where a table finds its jobs' records: all of them, or a way to read some of them by key
# (``StateStore.records_of``), which a pass over a big batch calls a few hundred keys at a time.
Records = Mapping[str, JobRecord] | Callable[[list[str]], Mapping[str, JobRecord]]


def build_table(
    manifest: Manifest,
    records: Records,
    takes: Mapping[str, Sequence[TakeRecord]] | None = None,
) -> Table:
    """One row per job of the manifest, joined with its state (pending when never run): its
    current take, with its earlier takes (a redo's) under ``history``. Rows are made as they
    are read, from records read as they are needed."""
    return Table(manifest, _Rows(manifest, records, takes or {}))


class _Rows(Sequence[dict[str, Any]]):
    """The rows of a manifest's jobs, each made when it is read (never all kept)."""

    def __init__(
        self,
        manifest: Manifest,
        records: Records,
        takes: Mapping[str, Sequence[TakeRecord]],
    ) -> None:
        self.jobs = manifest.jobs
        self.lookup = records if callable(records) else lambda keys: records
        self.takes = takes

    def __len__(self) -> int:
        return len(self.jobs)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | Sequence[dict[str, Any]]:
        if isinstance(index, slice):
            return list(self._rows(self.jobs[index]))
        return next(self._rows([self.jobs[index]]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._rows(self.jobs)

    def _rows(self, jobs: Iterable[Job]) -> Iterator[dict[str, Any]]:
        for chunk in chunked(jobs):
            found = self.lookup([job.key for job in chunk])
            for job in chunk:
                yield self._row(job, found.get(job.key))

    def _row(self, job: Job, record: JobRecord | None) -> dict[str, Any]:
        return {
            "id": job.id,
            "variant": job.variant,
            "take": record.take if record else 1,
            "status": record.status if record else JobStatus.PENDING,
            "task_id": record.task_id if record else None,
            "prompt": job.prompt,
            "images": list(job.image_names),
            "image_size": job.image_size,
            "output_format": job.output_format,
            "result_urls": list(record.result_urls) if record else [],
            "files": list(record.files) if record else [],
            "error": record.error if record else None,
            "failure": failure_of(record),
            "attempts": record.tasks_total if record else 0,
            "possible_duplicate": bool(record.possible_duplicate) if record else False,
            "submitted_at": submitted_at(record),
            "finished_at": finished_at(record),
            "key": job.key,
            "history": [_earlier(take) for take in self.takes.get(job.key, ())],
        }


def _earlier(take: TakeRecord) -> dict[str, Any]:
    return {
        "take": take.take,
        "status": take.status,
        "task_id": take.task_id,
        "files": list(take.files),
        "error": take.error,
        "finished_at": take.finished_at,
        "reason": take.reason,
    }


def every_take(table: Table) -> Table:
    """The table with a row for each earlier take of a redone job, before its current one."""
    rows = []
    for row in table.rows:
        for earlier in row["history"]:
            rows.append(
                {
                    **row,
                    "take": earlier["take"],
                    "status": earlier["status"],
                    "task_id": earlier["task_id"],
                    "result_urls": [],
                    "files": earlier["files"],
                    "error": earlier["error"],
                    "failure": None,
                    "attempts": 0,
                    "possible_duplicate": False,
                    "submitted_at": None,
                    "finished_at": earlier["finished_at"],
                    "history": [],
                }
            )
        rows.append(row)
    return Table(table.manifest, tuple(rows))


def failure_of(record: JobRecord | None) -> str | None:
    """A failed job's failure class (``request`` or ``transient``); None for any other job."""
    if record is None or record.status != JobStatus.FAILED or record.failure is None:
        return None
    return str(record.failure)


def submitted_at(record: JobRecord | None) -> str | None:
    """When the task shown was created (the job's first submission when it has none)."""
    if record is None:
        return None
    if record.task_id is not None and record.task_created_at is not None:
        return record.task_created_at
    return record.submitted_at


def finished_at(record: JobRecord | None) -> str | None:
    """When the task shown finished, for a job that has finished (None while it runs)."""
    if record is None or record.finished_at is None:
        return None
    if record.task_id is not None and record.task_finished_at is not None:
        return record.task_finished_at
    return record.finished_at


def to_csv(table: Table) -> str:
    """The table as CSV (see :func:`csv_chunks`)."""
    return "".join(csv_chunks(table))


def csv_chunks(table: Table) -> Iterator[str]:
    """The table as CSV, a row at a time (lists space-separated); a text cell that a
    spreadsheet would take for a formula gets a leading ``'``, so it shows as the text it is."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in table.rows:
        cells = [_csv_cell(column, row[column]) for column in COLUMNS]
        if any("\r" in cell for cell in cells):
            # The csv module quotes a cell for the characters of its own line ending only: with
            # "\n", a carriage return in a cell would end the row for most readers.
            line = io.StringIO()
            csv.writer(line, lineterminator="\r\n").writerow(cells)
            buffer.write(line.getvalue()[:-2] + "\n")
        else:
            writer.writerow(cells)
        if buffer.tell() > _CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


_CHUNK = 1 << 16


def _csv_cell(column: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, int):
        return "" if value is None else str(value)  # numbers are ours: never a formula
    text = " ".join(value) if column in LIST_COLUMNS else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def to_json(table: Table, summary: Mapping[str, Any]) -> str:
    """The table as a JSON document (see :func:`json_chunks`)."""
    return "".join(json_chunks(table, summary))


def json_chunks(table: Table, summary: Mapping[str, Any]) -> Iterator[str]:
    """The table as a JSON document with the manifest's name and path and a summary, a job at
    a time.

    One job per line: readable, diff-friendly, and written by the C encoder (an indented
    document takes the pure-Python one, several times slower for large batches).
    """
    manifest = {"name": table.manifest.name, "path": display_path(table.manifest.path)}
    yield (
        "{\n"
        f'  "manifest": {json.dumps(manifest, ensure_ascii=False)},\n'
        f'  "summary": {json.dumps(dict(summary), ensure_ascii=False)},\n'
        '  "jobs": [\n    '
    )
    for number, row in enumerate(table.rows):
        yield (",\n    " if number else "") + json.dumps(row, ensure_ascii=False)
    yield "\n  ]\n}\n"


def _plain_mode(path: Path) -> int:
    """The permissions ``open(path, "w")`` would leave ``path`` with."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Replace ``path`` with ``text`` (a string, or its pieces in order, written as they come)
    so that readers see the old file or the new, never half.

    A full disk or a read-only folder is an :class:`~ruxa_batch.errors.EnvironmentProblem`.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        # mkstemp makes the file owner-only; give it what a plain write would: the mode of the
        # file it replaces, else 0666 less the umask.
        if hasattr(os, "fchmod"):
            os.fchmod(handle, _plain_mode(path))
    except OSError as exc:
        raise cannot_write(display_path(path), exc) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            if isinstance(text, str):
                out.write(text)
            else:
                for piece in text:
                    out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise cannot_write(display_path(path), exc) from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_results(
    table: Table,
    output_dir: Path,
    summary: Mapping[str, Any],
    *,
    names: tuple[str, str] = ("results.csv", "results.json"),
) -> Sequence[Path]:
    """Write ``results.csv`` and ``results.json`` (or ``names``) into ``output_dir``; returns
    their paths."""
    csv_path = output_dir / names[0]
    json_path = output_dir / names[1]
    write_atomic(csv_path, csv_chunks(table))
    write_atomic(json_path, json_chunks(table, summary))
    return (csv_path, json_path)
