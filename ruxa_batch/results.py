"""The results table (one row per job, in manifest order) and its CSV and JSON files."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
    "model",  # added with the models beside the edit model: last, so no column moves
    "resolution",
)
LIST_COLUMNS = ("images", "result_urls", "files")
# A spreadsheet opening the CSV runs a cell that starts with one of these as a formula (OWASP,
# "CSV Injection"); prompts, CSV rows and the API's failMsg are anybody's text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class Table:
    """The results of a manifest's jobs, from the state file.

    ``rows`` is any sequence of row dicts; :func:`build_table` gives one that makes each row
    when it is read, so that writing the results of a big batch streams instead of holding
    every row in memory. The counts are made once, in a pass that builds no row.
    """

    def __init__(
        self,
        manifest: Manifest,
        rows: Sequence[dict[str, Any]],
        *,
        tally: tuple[dict[str, int], int] | None = None,
    ) -> None:
        self.manifest = manifest
        self.rows = rows
        self._tally = tally

    def __repr__(self) -> str:
        return f"Table({self.manifest.name!r}, {len(self.rows)} rows)"

    def tally(self) -> tuple[dict[str, int], int]:
        """Jobs per status (every status present, by the status's word) and possible
        duplicates: counted on the first call."""
        if self._tally is None:
            found: Counter[str] = Counter()
            duplicates = 0
            marks = (
                self.rows.marks()
                if isinstance(self.rows, _Rows)
                else ((row["status"], row["possible_duplicate"]) for row in self.rows)
            )
            for status, duplicate in marks:
                found[status] += 1
                duplicates += bool(duplicate)
            self._tally = ({status.value: found[status] for status in JOB_STATUSES}, duplicates)
        return self._tally

    def counts(self) -> dict[str, int]:
        """Jobs per status, every status present, by the status's word."""
        return dict(self.tally()[0])

    def possible_duplicates(self) -> int:
        """Jobs whose create may have been charged twice."""
        return self.tally()[1]

    def sharing(self, rows: Sequence[dict[str, Any]]) -> Table:
        """The same table, counted already, read through ``rows``."""
        return Table(self.manifest, rows, tally=self.tally())


# Where a table finds its jobs' records: all of them, or a way to read some of them by key
# (``StateStore.records_of``), which a pass over a big batch calls a few hundred keys at a time.
Records = Mapping[str, JobRecord] | Callable[[list[str]], Mapping[str, JobRecord]]


def build_table(
    manifest: Manifest,
    records: Records,
    takes: Mapping[str, Sequence[TakeRecord]] | None = None,
    *,
    tally: tuple[Mapping[JobStatus, int], int] | None = None,
) -> Table:
    """One row per job of the manifest, joined with its state (pending when never run): its
    current take, with its earlier takes (a redo's) under ``history``. Rows are made as they
    are read, from records read as they are needed. ``tally`` is the counts of statuses and
    possible duplicates when known already (``StateStore.tally``)."""
    counted = None
    if tally is not None:
        counted = ({status.value: tally[0].get(status, 0) for status in JOB_STATUSES}, tally[1])
    return Table(manifest, _Rows(manifest, records, takes or {}), tally=counted)


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

    def marks(self) -> Iterator[tuple[JobStatus, bool]]:
        """Each job's status and whether it may have been paid twice, making no row."""
        for chunk in chunked(self.jobs):
            found = self.lookup([job.key for job in chunk])
            for job in chunk:
                record = found.get(job.key)
                if record is None:
                    yield JobStatus.PENDING, False
                else:
                    yield record.status, record.possible_duplicate

    def _rows(self, jobs: Iterable[Job]) -> Iterator[dict[str, Any]]:
        for chunk in chunked(jobs):
            found = self.lookup([job.key for job in chunk])
            for job in chunk:
                yield self._row(job, found.get(job.key))

    def _row(self, job: Job, record: JobRecord | None) -> dict[str, Any]:
        takes = self.takes.get(job.key)
        row = {
            "id": job.id,
            "variant": job.variant,
            "take": 1,
            "status": JobStatus.PENDING,
            "task_id": None,
            "model": job.model,
            "prompt": job.prompt,
            "images": [image if isinstance(image, str) else image.shown for image in job.images],
            "image_size": job.image_size,
            "resolution": job.resolution,
            "output_format": job.output_format,
            "result_urls": [],
            "files": [],
            "error": None,
            "failure": None,
            "attempts": 0,
            "possible_duplicate": False,
            "submitted_at": None,
            "finished_at": None,
            "key": job.key,
            "history": [_earlier(take) for take in takes] if takes else [],
        }
        if record is not None:
            row["take"] = record.take
            row["status"] = record.status
            row["task_id"] = record.task_id
            row["result_urls"] = list(record.result_urls)
            row["files"] = list(record.files)
            row["error"] = record.error
            row["failure"] = failure_of(record)
            row["attempts"] = record.tasks_total
            row["possible_duplicate"] = bool(record.possible_duplicate)
            row["submitted_at"] = submitted_at(record)
            row["finished_at"] = finished_at(record)
        return row


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
    columns = [(column, column in LIST_COLUMNS) for column in COLUMNS]
    for row in table.rows:
        cells = [_csv_cell(row[column], listed) for column, listed in columns]
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
# json.dumps(row, ensure_ascii=False), its encoder made once rather than once a row.
_JSON_ROW = json.JSONEncoder(ensure_ascii=False)


def _csv_cell(value: Any, listed: bool) -> str:
    if value is None:
        return ""
    kind = type(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)  # numbers are ours: never a formula
    text = " ".join(value) if listed else str(value)
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
    encode = _JSON_ROW.encode
    for number, row in enumerate(table.rows):
        yield (",\n    " if number else "") + encode(row)
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
    pieces = iter((text,)) if isinstance(text, str) else iter(text)
    with _Replacing(path) as out:
        for piece in pieces:
            out.write(piece)


class _Replacing:
    """A file written beside ``path`` and put in its place when complete (on a clean exit);
    removed on any error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            # mkstemp makes the file owner-only; give it what a plain write would: the mode of
            # the file it replaces, else 0666 less the umask.
            if hasattr(os, "fchmod"):
                os.fchmod(handle, _plain_mode(path))
        except OSError as exc:
            raise cannot_write(display_path(path), exc) from None
        self.temp = Path(temp)
        self.out = os.fdopen(handle, "w", encoding="utf-8", newline="")

    def __enter__(self) -> _Replacing:
        return self

    def write(self, piece: str) -> None:
        try:
            self.out.write(piece)
        except OSError as exc:
            self.abandon()
            raise cannot_write(display_path(self.path), exc) from None

    def finish(self) -> None:
        """Put the complete file in place."""
        try:
            with self.out:
                self.out.flush()
                os.fsync(self.out.fileno())
            os.replace(self.temp, self.path)
        except OSError as exc:
            self.abandon()
            raise cannot_write(display_path(self.path), exc) from None

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.out.close()
        self.temp.unlink(missing_ok=True)

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.finish()
        else:
            self.abandon()


# What makes one file of a table's rows: csv_chunks, json_chunks with a summary, the report.
Writer = Callable[[Table], Iterable[str]]


def write_tables(table: Table, files: Sequence[tuple[Path, Writer]]) -> list[Path]:
    """Write every file of ``files`` from ``table`` in one pass over its rows, each replaced
    only when all are complete; returns their paths.

    Each row is made (and its record read) once for all the files, not once per file: the
    writer furthest behind is always the one advanced, so only the rows between the slowest
    and the fastest writer (a few hundred) are held at a time.
    """
    table.tally()  # counted before the pass: the writers' headers need the counts
    length = len(table.rows)
    branches = [_Branch(rows, length) for rows in itertools.tee(iter(table.rows), len(files))]
    outs: list[_Replacing] = []
    try:
        for path, _ in files:
            outs.append(_Replacing(path))
        pieces = [
            iter(make(table.sharing(branch)))
            for branch, (_, make) in zip(branches, files, strict=True)
        ]
        going = set(range(len(files)))
        while going:
            number = min(going, key=lambda n: branches[n].taken)
            piece = next(pieces[number], None)
            if piece is None:
                going.discard(number)
            else:
                outs[number].write(piece)
        for out in outs:
            out.finish()
    except BaseException:
        for out in outs:
            out.abandon()
        raise
    return [path for path, _ in files]


class _Branch(Sequence[dict[str, Any]]):
    """One writer's view of rows read once for several: iterated once, counting what it took."""

    def __init__(self, rows: Iterator[dict[str, Any]], length: int) -> None:
        self.rows = rows
        self.length = length
        self.taken = 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            self.taken += 1
            yield row

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | Sequence[dict[str, Any]]:
        raise TypeError("rows read in one pass are read in order, not by index")


def write_results(
    table: Table,
    output_dir: Path,
    summary: Mapping[str, Any],
    *,
    names: tuple[str, str] = ("results.csv", "results.json"),
    also: Sequence[tuple[Path, Writer]] = (),
) -> list[Path]:
    """Write ``results.csv`` and ``results.json`` (or ``names``) into ``output_dir``, and the
    files of ``also`` (the report), in one pass over the rows; returns their paths."""
    return write_tables(
        table,
        [
            (output_dir / names[0], csv_chunks),
            (output_dir / names[1], lambda part: json_chunks(part, summary)),
            *also,
        ],
    )
