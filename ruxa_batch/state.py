"""The state file: one SQLite database per batch, written ahead of every paid action.

One class, :class:`StateStore`, owns the file: opening it, numbered schema migrations, the
one-run-at-a-time lock, transactions and every query. The engine calls its methods at each step
of a job's life; each method is one transaction, committed before the engine goes on, so a run
killed at any moment leaves a state the next run can continue from.

Write-ahead rule for creates: :meth:`StateStore.begin_attempt` commits an attempt row *before*
the create request leaves; :meth:`StateStore.record_task` commits the task ID the moment the
answer arrives. An attempt row still ``sending`` when a run starts is an ambiguous create.

The API key is never stored here, in any form.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Concatenate, NamedTuple, ParamSpec, TypeVar

from ruxa_batch.errors import (
    EXIT_ENVIRONMENT,
    EXIT_INVALID,
    EnvironmentProblem,
    RuxaBatchError,
    os_reason,
)
from ruxa_batch.statuses import (
    FINAL_STATUSES,
    AttemptOutcome,
    FailureClass,
    JobStatus,
    TaskState,
)

STATE_FILENAME = ".ruxa-batch.sqlite"
# Jobs read from the state per query on a pass over a batch: few enough that a pass holds a
# handful of records, enough that a 100,000-job pass is 200 queries.
RECORDS_AT_ONCE = 500

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT,
        tasks_created INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE jobs (
        key TEXT PRIMARY KEY,
        id TEXT NOT NULL,
        variant INTEGER NOT NULL,
        request TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        possible_duplicate INTEGER NOT NULL DEFAULT 0,
        task_id TEXT,
        result_urls TEXT NOT NULL DEFAULT '[]',
        files TEXT NOT NULL DEFAULT '[]',
        sha256 TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        submitted_at TEXT,
        finished_at TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE attempts (
        job_key TEXT NOT NULL REFERENCES jobs(key),
        attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        task_id TEXT UNIQUE,
        detail TEXT,
        run_id INTEGER REFERENCES runs(run_id),
        started_at TEXT NOT NULL,
        answered_at TEXT,
        PRIMARY KEY (job_key, attempt)
    );
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        job_key TEXT NOT NULL REFERENCES jobs(key),
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,
        result_urls TEXT NOT NULL DEFAULT '[]',
        fail_code TEXT,
        fail_msg TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE INDEX tasks_by_job ON tasks(job_key);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: recording a task's results looks its job up by task ID; without an index every such
    # update scanned all jobs (quadratic: found by the 20,000-job benchmark)
    """
    CREATE INDEX jobs_by_task ON jobs(task_id);
    """,
    # 3: each picture's size beside its sha256, so a changed file is often found without reading it
    """
    ALTER TABLE jobs ADD COLUMN sizes TEXT NOT NULL DEFAULT '[]';
    """,
    # 4: a failed job's failure class (request or transient), so results say whether a retry
    # is worth paying for
    """
    ALTER TABLE jobs ADD COLUMN failure TEXT;
    """,
    # 5: where each local picture was published, by uploader target and content, so that later
    # runs reuse a URL until it would expire instead of uploading again
    """
    CREATE TABLE uploads (
        target TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        url TEXT NOT NULL,
        expires_at REAL,
        size INTEGER NOT NULL,
        sent_bytes INTEGER NOT NULL,
        published_at TEXT NOT NULL,
        PRIMARY KEY (target, sha256)
    );
    """,
    # 6: takes: a job asked to be made again (redo) keeps its earlier takes, their tasks and
    # pictures (moved to the history folder), and starts a new take under the same identity
    """
    ALTER TABLE jobs ADD COLUMN take INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE takes (
        job_key TEXT NOT NULL REFERENCES jobs(key),
        take INTEGER NOT NULL,
        status TEXT NOT NULL,
        task_id TEXT,
        files TEXT NOT NULL DEFAULT '[]',
        sha256 TEXT NOT NULL DEFAULT '[]',
        sizes TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        finished_at TEXT,
        reason TEXT,
        archived_at TEXT NOT NULL,
        PRIMARY KEY (job_key, take)
    );
    """,
)


@dataclass(frozen=True)
class TakeRecord:
    """An earlier take of a job: what it was, and where its pictures are kept."""

    key: str
    take: int
    status: JobStatus
    task_id: str | None
    files: tuple[str, ...]  # relative to the output folder, under history/
    sha256: tuple[str, ...]
    error: str | None
    finished_at: str | None
    reason: str | None  # why the next take was asked for
    archived_at: str


@dataclass(frozen=True)
class UploadRecord:
    """Where one local picture was published for one uploader target."""

    url: str
    expires_at: float | None  # wall-clock seconds; None: it does not expire
    size: int


def _task_state(value: str | None) -> TaskState | None:
    """A stored task state (older files may hold a raw state the API sent: unknown)."""
    if value is None:
        return None
    try:
        return TaskState(value)
    except ValueError:
        return TaskState.UNKNOWN


_T = TypeVar("_T")
_STATUSES = {status.value: status for status in JobStatus}
_TASK_STATES = {state.value: state for state in TaskState}


def _strings(text: str) -> tuple[Any, ...]:
    """A list column's values (file names, URLs, hashes, sizes).

    Most lists hold one plain value (a job's one picture): read without the JSON parser, which
    takes most of the time of a pass over a big batch. A string with no ``"`` or ``\\`` inside
    is exactly its characters in JSON.
    """
    if text == "[]":
        return ()
    inner = text[2:-2]
    if text[:2] == '["' and text[-2:] == '"]' and '"' not in inner and "\\" not in inner:
        return (inner,)
    if text[1:-1].isdigit() and text[0] == "[" and text[-1] == "]":
        return (int(text[1:-1]),)
    return tuple(json.loads(text))


def chunked(items: Iterable[_T], size: int = RECORDS_AT_ONCE) -> Iterator[list[_T]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch: list[_T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def state_path_for(output_dir: Path, explicit: Path | None = None) -> Path:
    """``--state`` if given, else ``<output.dir>/.ruxa-batch.sqlite``."""
    return explicit if explicit is not None else output_dir / STATE_FILENAME


def now_iso() -> str:
    """The current time, ISO 8601 UTC with seconds."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class StateError(RuxaBatchError):
    """The state file cannot be used (exit 74 when the disk or the file is at fault)."""


def sqlite_problem(path: Path, exc: sqlite3.Error) -> StateError | None:
    """What an SQLite error means for the state file at ``path``, as a one-line error; None
    for an error that only a bug can cause (a wrong statement, a broken constraint)."""
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(
        exc,
        (
            sqlite3.IntegrityError,
            sqlite3.ProgrammingError,
            sqlite3.DataError,
            sqlite3.NotSupportedError,
            sqlite3.InternalError,
        ),
    ):
        return None
    # The error's name (Python 3.11+) or, before that, SQLite's words for it.
    said = f"{getattr(exc, 'sqlite_errorname', '')} {exc}"
    shown = str(path)
    if "FULL" in said or "is full" in said:
        message = (
            f"cannot write the state file {shown}: the disk is full; free some space and run "
            "the same command again (everything recorded so far is kept)"
        )
    elif "READONLY" in said or "readonly" in said or "CANTOPEN" in said or "unable to open" in said:
        message = (
            f"cannot write the state file {shown}: the file system or folder is read-only; "
            "make it writable or choose another state file with --state"
        )
    elif "CORRUPT" in said or "malformed" in said:
        message = (
            f"the state file {shown} is damaged ({exc}); keep a copy and try "
            f"`sqlite3 {shown} .recover`: starting a new state file would submit every job again"
        )
    elif "NOTADB" in said or "not a database" in said:
        return StateError(f"cannot use state file {shown}: {exc}", exit_code=EXIT_INVALID)
    elif "IOERR" in said or "I/O error" in said:
        message = (
            f"cannot use the state file {shown}: {exc}; check the disk (full? read-only?) and "
            "run the same command again"
        )
    else:
        message = f"cannot use the state file {shown}: {exc}"
    return StateError(message, exit_code=EXIT_ENVIRONMENT)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(
    method: Callable[Concatenate[StateStore, _P], _R],
) -> Callable[Concatenate[StateStore, _P], _R]:
    """Turn the SQLite errors a disk can cause into :class:`StateError`, at the store's edge."""

    @functools.wraps(method)
    def guarded(self: StateStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            problem = sqlite_problem(self.path, exc)
            if problem is None:
                raise
            raise problem from None

    return guarded


class StateLocked(RuxaBatchError):
    """Another run holds the state file."""

    exit_code = EXIT_INVALID


class Mark(NamedTuple):
    """A job's row as a pass first reads it (see :meth:`StateStore.marks_of`)."""

    id: str
    variant: int
    status: JobStatus
    in_doubt: bool  # a create was sent and its answer never recorded


@dataclass(frozen=True, slots=True)  # one per job: no __dict__ each
class JobRecord:
    """A job's row in the state file."""

    key: str
    id: str
    variant: int
    status: JobStatus
    attempts: int
    possible_duplicate: bool
    task_id: str | None
    result_urls: tuple[str, ...]
    files: tuple[str, ...]
    sha256: tuple[str, ...]
    error: str | None
    submitted_at: str | None
    finished_at: str | None
    open_attempt: int | None  # an attempt still "sending": the create's fate is unknown
    task_state: TaskState | None = None  # the recorded state of the job's latest task
    sizes: tuple[int, ...] = ()  # bytes of each file; empty in files written before migration 3
    task_created_at: str | None = None  # when the API answered the create of that task
    task_finished_at: str | None = None  # when that task was seen to finish
    tasks_total: int = 0  # tasks the job ever had, across --retry-... runs
    failure: FailureClass | None = None  # a failed job's failure class
    take: int = 1  # 1, or the number of the take a redo started

    def task_age(self, *, now: datetime | None = None) -> float:
        """Seconds since the latest task was created (wall clock; 0 without a task), so that
        a resumed run counts --task-timeout from the create, not from its own start."""
        if self.task_created_at is None:
            return 0.0
        created = datetime.fromisoformat(self.task_created_at.replace("Z", "+00:00"))
        current = now if now is not None else datetime.now(timezone.utc)
        return max(0.0, (current - created).total_seconds())


class _Lock:
    """An OS-level lock beside the state file; the OS drops it when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[str] | None = None

    def acquire(self) -> None:
        # Never through a symbolic link: the pid written below would truncate its target.
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            if not hasattr(os, "O_NOFOLLOW") and self.path.is_symlink():  # pragma: no cover
                raise OSError(errno.ELOOP, "a symbolic link")
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
                raise self._not_a_file() from None
            raise _cannot_write_in(self.path.parent, exc) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._not_a_file()
        handle = os.fdopen(fd, "r+", encoding="utf-8")
        try:
            _lock_file(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "not known"
            handle.close()
            raise StateLocked(
                f"another ruxa-batch run (pid {holder}) is using {self.path.with_suffix('')}; "
                "wait for it to finish or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle

    def _not_a_file(self) -> StateError:
        return StateError(
            f"the lock file {self.path} is a symbolic link or not a regular file; ruxa-batch "
            "never writes through one: remove it and run again"
        )

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold the lock of the state file ``path`` (as a run does): :class:`StateLocked` when a
    run is using it. A folder where no lock file can be made (read-only) is not locked."""
    lock = _Lock(path.with_name(path.name + ".lock"))
    try:
        lock.acquire()
    except EnvironmentProblem:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _cannot_write_in(folder: Path, exc: OSError) -> EnvironmentProblem:
    return EnvironmentProblem(
        f"cannot write the state file in {folder}: {os_reason(exc)}; make it writable or "
        "choose another state file with --state"
    )


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Open ``path`` for reading, also on a read-only file system."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size:
            raise
        # A read-only folder: SQLite cannot make the shared-memory file a WAL database needs.
        # With no write-ahead log, every committed change is in the file itself, which can
        # then be read as immutable.
        conn.close()
        conn = sqlite3.connect(
            f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None
        )
    return conn


def _lock_file(handle: IO[str]) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


class StateStore:
    """The SQLite state of one batch."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._changes = 0  # transactions so far
        self._records: tuple[int, dict[str, JobRecord]] | None = None
        self._schema_version: int | None = None
        self.readonly = readonly
        self.run_id: int | None = None
        self._lock: _Lock | None = None
        self._sync = ""
        try:
            if readonly:
                self.conn = _connect_readonly(path)
            else:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise _cannot_write_in(path.parent, exc) from None
                self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA busy_timeout = 5000")
            if not readonly:
                self.conn.execute("PRAGMA journal_mode = WAL")
                # Write-ahead steps commit with synchronous=FULL (on disk before the engine acts,
                # so even a power cut cannot lose a task ID the API handed out); the others
                # with NORMAL, which survives any crash of the process, and whose loss after a
                # power cut is repaired by the next run (a status query, a download again).
                self.conn.execute("PRAGMA synchronous = NORMAL")
                self._sync = "NORMAL"
                self.conn.execute("PRAGMA foreign_keys = ON")
                self._migrate()
            elif self.schema_version() > len(MIGRATIONS):
                raise StateError(f"{path} was written by a newer ruxa-batch; upgrade to read it")
        except sqlite3.DatabaseError as exc:
            problem = sqlite_problem(path, exc)
            raise problem or StateError(f"cannot use state file {path}: {exc}") from None

    # -- life cycle -----------------------------------------------------------------------

    @classmethod
    def open_for_run(cls, path: Path) -> StateStore:
        """Open for writing, holding the one-run-at-a-time lock until :meth:`close`."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cannot_write_in(path.parent, exc) from None
        lock = _Lock(path.with_name(path.name + ".lock"))
        lock.acquire()
        try:
            store = cls(path)
        except BaseException:
            lock.release()
            raise
        store._lock = lock
        return store

    def close(self) -> None:
        """Close the database and release the lock."""
        self.conn.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic step; ``durable`` ones are synced to disk before this returns."""
        self._changes += 1  # whatever it writes, what job_records() read before is stale
        try:
            wanted = "FULL" if durable else "NORMAL"
            if not self.readonly and self._sync != wanted:
                self.conn.execute(f"PRAGMA synchronous = {wanted}")
                self._sync = wanted
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does that).
                if self.conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            problem = sqlite_problem(self.path, exc)
            if problem is None:
                raise
            raise problem from None

    @_guarded
    def schema_version(self) -> int:
        """The number of migrations applied (0 for a new file)."""
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if not exists:
            return 0
        row = self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    @_guarded
    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
        current = self.schema_version()
        if current > len(MIGRATIONS):
            raise StateError(f"{self.path} was written by a newer ruxa-batch; upgrade to use it")
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.transaction() as conn:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, now_iso()),
                )

    # -- runs -------------------------------------------------------------------------------

    @_guarded
    def start_run(self) -> int:
        """Record the start of a run; returns its id."""
        with self.transaction() as conn:
            cursor = conn.execute("INSERT INTO runs (started_at) VALUES (?)", (now_iso(),))
        self.run_id = int(cursor.lastrowid or 0)
        return self.run_id

    @_guarded
    def finish_run(self, *, outcome: str, tasks_created: int) -> None:
        """Record how the current run ended."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, tasks_created = ? WHERE run_id = ?",
                (now_iso(), outcome, tasks_created, self.run_id),
            )

    # -- jobs -------------------------------------------------------------------------------

    @_guarded
    def ensure_jobs(self, jobs: Iterable[tuple[str, str, int, str]]) -> None:
        """Insert (key, id, variant, request JSON) for jobs not yet known; refresh their ids."""
        stamp = now_iso()
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO jobs (key, id, variant, request, status, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET id = excluded.id, variant = excluded.variant",
                (  # consumed as it is written: a big batch's requests are never all held
                    (key, job_id, variant, request, JobStatus.PENDING, stamp)
                    for key, job_id, variant, request in jobs
                ),
            )

    @_guarded
    def job_records(self) -> dict[str, JobRecord]:
        """Every job row, by identity key.

        Read again only after a write: a resumed batch with nothing to do reads its 20,000
        rows once, not once for the plan and again for the results.
        """
        if self._records is not None and self._records[0] == self._changes:
            return dict(self._records[1])
        records = self._read_job_records()
        self._records = (self._changes, records)
        return dict(records)

    @_guarded
    def marks_of(self, keys: Sequence[str]) -> dict[str, Mark]:
        """What a pass needs to know of each recorded job among ``keys`` before reading its
        whole record: its id, variant and status, and whether a create of it is in doubt."""
        found: dict[str, Mark] = {}
        for start in range(0, len(keys), RECORDS_AT_ONCE):
            part = tuple(keys[start : start + RECORDS_AT_ONCE])
            marks = ",".join("?" * len(part))
            for key, job_id, variant, status, in_doubt in self.conn.execute(
                "SELECT key, id, variant, status, EXISTS (SELECT 1 FROM attempts "
                "WHERE attempts.job_key = jobs.key AND attempts.outcome = ?) "
                f"FROM jobs WHERE key IN ({marks})",
                (AttemptOutcome.SENDING, *part),
            ).fetchall():
                status = _STATUSES.get(status) or JobStatus(status)
                found[key] = Mark(job_id, variant, status, bool(in_doubt))
        return found

    @_guarded
    def records_of(self, keys: Sequence[str]) -> dict[str, JobRecord]:
        """The recorded jobs among ``keys``, by key: what a pass over a big batch reads a few
        hundred jobs at a time, so that it never holds every record (see :func:`chunked`)."""
        found: dict[str, JobRecord] = {}
        for start in range(0, len(keys), RECORDS_AT_ONCE):
            part = keys[start : start + RECORDS_AT_ONCE]
            marks = ",".join("?" * len(part))
            found.update(self._read_job_records(f"IN ({marks})", tuple(part)))
        return found

    def _read_job_records(
        self, keys: str | None = None, params: tuple[str, ...] = ()
    ) -> dict[str, JobRecord]:
        """Every job row, or those whose key is ``keys`` (an SQL ``IN (...)`` of ``params``).

        Rows come as plain tuples, taken apart by position: a pass over 100,000 jobs reads
        them in about a second.
        """
        where = f"AND job_key {keys}" if keys else ""
        open_attempts = dict(
            self.conn.execute(
                "SELECT job_key, MAX(attempt) FROM attempts "
                f"WHERE outcome = ? {where} GROUP BY job_key",
                (AttemptOutcome.SENDING, *params),
            ).fetchall()
        )
        # A file of an older version opened read-only has not been migrated: fewer columns.
        version = self._version()
        columns = (
            "jobs.key, jobs.id, jobs.variant, jobs.status, jobs.attempts, "
            "jobs.possible_duplicate, jobs.task_id, jobs.result_urls, jobs.files, jobs.sha256, "
            "jobs.error, jobs.submitted_at, jobs.finished_at, tasks.state, tasks.created_at, "
            "tasks.finished_at, "
            "(SELECT COUNT(*) FROM tasks AS counted WHERE counted.job_key = jobs.key), "
            + ("jobs.sizes, " if version >= 3 else "'[]', ")
            + ("jobs.failure, " if version >= 4 else "NULL, ")
            + ("jobs.take" if version >= 6 else "1")
        )
        cursor = self.conn.cursor()
        cursor.row_factory = None
        cursor.execute(
            f"SELECT {columns} FROM jobs LEFT JOIN tasks ON tasks.task_id = jobs.task_id"
            + (f" WHERE jobs.key {keys}" if keys else ""),
            params,
        )
        records = {}
        for (
            key,
            job_id,
            variant,
            status,
            attempts,
            possible_duplicate,
            task_id,
            result_urls,
            files,
            sha256,
            error,
            submitted_at,
            finished_at,
            task_state,
            task_created_at,
            task_finished_at,
            tasks_total,
            sizes,
            failure,
            take,
        ) in cursor:
            records[key] = JobRecord(
                key,
                job_id,
                variant,
                _STATUSES.get(status) or JobStatus(status),
                attempts,
                bool(possible_duplicate),
                task_id,
                _strings(result_urls),
                _strings(files),
                _strings(sha256),
                error,
                submitted_at,
                finished_at,
                open_attempts.get(key),
                _TASK_STATES.get(task_state) or _task_state(task_state),
                _strings(sizes),
                task_created_at,
                task_finished_at,
                tasks_total,
                FailureClass(failure) if failure else None,
                take,
            )
        return records

    def _version(self) -> int:
        """The schema version, read once: it changes only when this store migrates."""
        if self._schema_version is None:
            self._schema_version = self.schema_version()
        return self._schema_version

    @_guarded
    def set_status(
        self,
        key: str,
        status: JobStatus,
        *,
        error: str | None = None,
        possible_duplicate: bool | None = None,
        reset_attempts: bool = False,
        failure: FailureClass | None = None,
    ) -> None:
        """Move a job to ``status`` (with an error message for failed/uncertain, and the
        failure's class for failed)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = ?, error = ?, updated_at = ?, failure = ?, "
                "possible_duplicate = COALESCE(?, possible_duplicate), "
                "attempts = CASE WHEN ? THEN 0 ELSE attempts END, "
                "finished_at = CASE WHEN ? THEN ? ELSE NULL END "
                "WHERE key = ?",
                (
                    status,
                    error,
                    now_iso(),
                    failure if status == JobStatus.FAILED else None,
                    None if possible_duplicate is None else int(possible_duplicate),
                    int(reset_attempts),
                    int(status in FINAL_STATUSES),
                    now_iso(),
                    key,
                ),
            )

    # -- attempts and tasks (the write-ahead part) -------------------------------------------

    @_guarded
    def begin_attempt(self, key: str) -> int:
        """Commit the intent to create a task, before the request is sent; returns its number."""
        stamp = now_iso()
        with self.transaction(durable=True) as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(attempt), 0) + 1 FROM attempts WHERE job_key = ?", (key,)
            ).fetchone()
            attempt = int(row[0])
            conn.execute(
                "INSERT INTO attempts (job_key, attempt, outcome, run_id, started_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, attempt, AttemptOutcome.SENDING, self.run_id, stamp),
            )
            conn.execute(
                "UPDATE jobs SET status = ?, error = NULL, failure = NULL, "
                "submitted_at = COALESCE(submitted_at, ?), updated_at = ? WHERE key = ?",
                (JobStatus.RUNNING, stamp, stamp, key),
            )
        return attempt

    @_guarded
    def record_task(self, key: str, attempt: int, task_id: str) -> None:
        """Commit the task ID the API answered with, before anything else happens to the job."""
        stamp = now_iso()
        with self.transaction(durable=True) as conn:
            conn.execute(
                "UPDATE attempts SET outcome = ?, task_id = ?, answered_at = ? "
                "WHERE job_key = ? AND attempt = ?",
                (AttemptOutcome.CREATED, task_id, stamp, key, attempt),
            )
            conn.execute(
                "INSERT INTO tasks (task_id, job_key, attempt, state, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (task_id, key, attempt, TaskState.WAITING, stamp),
            )
            conn.execute(
                "UPDATE jobs SET task_id = ?, status = ?, result_urls = '[]', "
                "attempts = attempts + 1, updated_at = ? WHERE key = ?",
                (task_id, JobStatus.RUNNING, stamp, key),
            )

    @_guarded
    def close_attempt(self, key: str, attempt: int, outcome: AttemptOutcome, detail: str) -> None:
        """Record that a create got no task ID: ``rejected`` (an API error) or ``ambiguous``.

        An ambiguous create may have made a task all the same, so the job is marked as a
        possible duplicate.
        """
        stamp = now_iso()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE attempts SET outcome = ?, detail = ?, answered_at = ? "
                "WHERE job_key = ? AND attempt = ?",
                (outcome, detail, stamp, key, attempt),
            )
            if outcome == AttemptOutcome.AMBIGUOUS:
                conn.execute(
                    "UPDATE jobs SET possible_duplicate = 1, updated_at = ? WHERE key = ?",
                    (stamp, key),
                )

    @_guarded
    def update_task(
        self,
        task_id: str,
        state: TaskState,
        *,
        result_urls: Sequence[str] = (),
        fail_code: str | None = None,
        fail_msg: str | None = None,
    ) -> None:
        """Record a task's latest state (and, when finished, its results or failure)."""
        stamp = now_iso()
        finished = state.finished
        urls = json.dumps(list(result_urls))
        with self.transaction() as conn:
            conn.execute(
                "UPDATE tasks SET state = ?, result_urls = ?, fail_code = ?, fail_msg = ?, "
                "finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE task_id = ?",
                (state, urls, fail_code, fail_msg, int(finished), stamp, task_id),
            )
            if result_urls:
                conn.execute(
                    "UPDATE jobs SET result_urls = ?, updated_at = ? WHERE task_id = ?",
                    (urls, stamp, task_id),
                )

    @_guarded
    def task_owner(self, task_id: str) -> str | None:
        """The job a task ID is recorded for (None: not recorded)."""
        row = self.conn.execute(
            "SELECT job_key FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def flag_possible_duplicate(self, key: str) -> None:
        """Mark a job as one whose tasks may have been charged twice."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET possible_duplicate = 1, updated_at = ? WHERE key = ?",
                (now_iso(), key),
            )

    @_guarded
    def task_state(self, task_id: str) -> tuple[TaskState | None, tuple[str, ...]]:
        """A task's recorded state and result URLs (None: no such task recorded)."""
        row = self.conn.execute(
            "SELECT state, result_urls FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        if row is None:
            return (None, ())
        return (_task_state(row["state"]), tuple(json.loads(row["result_urls"])))

    @_guarded
    def record_files(
        self,
        key: str,
        files: Sequence[str],
        digests: Sequence[str],
        sizes: Sequence[int] = (),
    ) -> None:
        """The job's pictures are on disk: it has succeeded."""
        stamp = now_iso()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = ?, files = ?, sha256 = ?, sizes = ?, error = NULL, "
                "failure = NULL, finished_at = ?, updated_at = ? WHERE key = ?",
                (
                    JobStatus.SUCCEEDED,
                    json.dumps(list(files)),
                    json.dumps(list(digests)),
                    json.dumps(list(sizes)),
                    stamp,
                    stamp,
                    key,
                ),
            )

    @_guarded
    def start_take(self, key: str, *, reason: str | None) -> int:
        """Keep the job's current take (its task, status and pictures, already moved to the
        history folder) and start the next one, pending, with its attempts reset: the redo's
        write-ahead record, committed before anything is sent. Returns the new take."""
        stamp = now_iso()
        with self.transaction(durable=True) as conn:
            row = conn.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
            take = int(row["take"])
            conn.execute(
                "INSERT INTO takes (job_key, take, status, task_id, files, sha256, sizes, error, "
                "finished_at, reason, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    take,
                    row["status"],
                    row["task_id"],
                    row["files"],
                    row["sha256"],
                    row["sizes"],
                    row["error"],
                    row["finished_at"],
                    reason,
                    stamp,
                ),
            )
            conn.execute(
                "UPDATE jobs SET take = ?, status = ?, attempts = 0, possible_duplicate = 0, "
                "task_id = NULL, result_urls = '[]', files = '[]', sha256 = '[]', sizes = '[]', "
                "error = NULL, failure = NULL, submitted_at = NULL, finished_at = NULL, "
                "updated_at = ? WHERE key = ?",
                (take + 1, JobStatus.PENDING, stamp, key),
            )
        return take + 1

    @_guarded
    def takes(self) -> dict[str, list[TakeRecord]]:
        """Every job's earlier takes, oldest first, by job key (none before migration 6)."""
        found: dict[str, list[TakeRecord]] = {}
        if self.schema_version() < 6:
            return found
        for row in self.conn.execute("SELECT * FROM takes ORDER BY job_key, take"):
            found.setdefault(row["job_key"], []).append(
                TakeRecord(
                    key=row["job_key"],
                    take=int(row["take"]),
                    status=JobStatus(row["status"]),
                    task_id=row["task_id"],
                    files=tuple(json.loads(row["files"])),
                    sha256=tuple(json.loads(row["sha256"])),
                    error=row["error"],
                    finished_at=row["finished_at"],
                    reason=row["reason"],
                    archived_at=row["archived_at"],
                )
            )
        return found

    @_guarded
    def forget_file(self, key: str, name: str) -> None:
        """One of the job's pictures is gone from disk (deleted by hand): drop it, its hash and
        its size from the record."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT files, sha256, sizes FROM jobs WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return
            files, digests = json.loads(row["files"]), json.loads(row["sha256"])
            sizes = json.loads(row["sizes"])
            keep = [index for index, file in enumerate(files) if file != name]
            conn.execute(
                "UPDATE jobs SET files = ?, sha256 = ?, sizes = ?, updated_at = ? WHERE key = ?",
                (
                    json.dumps([files[i] for i in keep]),
                    json.dumps([digests[i] for i in keep if i < len(digests)]),
                    json.dumps([sizes[i] for i in keep if i < len(sizes)]),
                    now_iso(),
                    key,
                ),
            )

    @_guarded
    def rename_file(self, key: str, old: str, new: str) -> None:
        """One of the job's pictures was moved from ``old`` to ``new`` (same bytes)."""
        with self.transaction() as conn:
            row = conn.execute("SELECT files FROM jobs WHERE key = ?", (key,)).fetchone()
            if row is None:
                return
            files = [new if name == old else name for name in json.loads(row["files"])]
            conn.execute(
                "UPDATE jobs SET files = ?, updated_at = ? WHERE key = ?",
                (json.dumps(files), now_iso(), key),
            )

    @_guarded
    def tally(self, keys: Iterable[str]) -> tuple[dict[JobStatus, int], int]:
        """How many of the jobs ``keys`` have each status (pending when not recorded), and how
        many may have been paid twice: the results' counts, read without making a record."""
        found: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        duplicates = 0
        for part in chunked(keys):
            marks = ",".join("?" * len(part))
            seen = 0
            for status, duplicate, count in self.conn.execute(
                "SELECT status, possible_duplicate, COUNT(*) FROM jobs "
                f"WHERE key IN ({marks}) GROUP BY status, possible_duplicate",
                part,
            ).fetchall():
                found[_STATUSES.get(status) or JobStatus(status)] += count
                duplicates += count if duplicate else 0
                seen += count
            found[JobStatus.PENDING] += len(part) - seen
        return found, duplicates

    @_guarded
    def tasks_created_this_run(self) -> int:
        """Tasks the current run has created (read once, when a run ends abruptly)."""
        row = self.conn.execute(
            "SELECT COUNT(*) FROM attempts WHERE run_id = ? AND outcome = ?",
            (self.run_id, AttemptOutcome.CREATED),
        ).fetchone()
        return int(row[0])

    @_guarded
    def history(self) -> dict[str, Any]:
        """Runs so far, tasks ever created, and the total time the runs took."""
        seconds = 0.0
        runs = 0
        for row in self.conn.execute("SELECT started_at, finished_at FROM runs"):
            runs += 1
            if row["finished_at"]:
                start = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
                end = datetime.fromisoformat(row["finished_at"].replace("Z", "+00:00"))
                seconds += (end - start).total_seconds()
        tasks = self.conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        return {"runs": runs, "tasks_created": int(tasks), "seconds": seconds}

    @_guarded
    def get_meta(self, key: str) -> str | None:
        """A value from the meta table."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def set_meta(self, key: str, value: str) -> None:
        """Store a value in the meta table."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    @_guarded
    def uploads(self, target: str) -> dict[str, UploadRecord]:
        """Every file published to ``target``, by sha256."""
        return {
            str(row[0]): UploadRecord(str(row[1]), row[2], int(row[3]))
            for row in self.conn.execute(
                "SELECT sha256, url, expires_at, size FROM uploads WHERE target = ?", (target,)
            )
        }

    @_guarded
    def record_upload(
        self,
        target: str,
        sha256: str,
        *,
        url: str,
        expires_at: float | None,
        size: int,
        sent_bytes: int,
    ) -> None:
        """Record (or renew) where a file was published, before any create uses the URL."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO uploads (target, sha256, url, expires_at, size, sent_bytes, "
                "published_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(target, sha256) DO UPDATE SET url = excluded.url, "
                "expires_at = excluded.expires_at, size = excluded.size, "
                "sent_bytes = excluded.sent_bytes, published_at = excluded.published_at",
                (target, sha256, url, expires_at, size, sent_bytes, now_iso()),
            )

    @_guarded
    def tasks_for(self, key: str) -> list[dict[str, Any]]:
        """Every task ever created for a job, oldest first."""
        return [
            dict(row)
            for row in self.conn.execute(
                "SELECT * FROM tasks WHERE job_key = ? ORDER BY attempt", (key,)
            )
        ]

    @_guarded
    def all_task_ids(self) -> set[str]:
        """Every task ID recorded in this state file."""
        return {row[0] for row in self.conn.execute("SELECT task_id FROM tasks")}

    # -- merging shards ------------------------------------------------------------------------

    @_guarded
    def job_keys(self) -> list[str]:
        """The identity key of every job row."""
        return [str(row[0]) for row in self.conn.execute("SELECT key FROM jobs")]

    @staticmethod
    def snapshot(source: Path, target: Path) -> None:
        """Copy the state file ``source`` to ``target`` as it is committed (what its
        write-ahead log holds included), reading ``source`` only; the copy is then brought to
        this version's schema."""
        try:
            reader = _connect_readonly(source)
            try:
                writer = sqlite3.connect(target)
                try:
                    reader.backup(writer)
                finally:
                    writer.close()
            finally:
                reader.close()
        except sqlite3.Error as exc:
            problem = sqlite_problem(source, exc)
            raise problem or StateError(f"cannot use state file {source}: {exc}") from None
        StateStore(target).close()

    @_guarded
    def absorb(self, other: Path) -> None:
        """Copy every row of the state file ``other`` (a :meth:`snapshot`, so of this schema)
        into this one, in one transaction: its jobs, runs (numbered after this file's own),
        attempts, tasks, earlier takes and published uploads (of one file published by both,
        the later record wins). The jobs of both must be distinct."""
        self.conn.execute("ATTACH DATABASE ? AS other", (str(other),))
        try:
            with self.transaction(durable=True) as conn:
                row = conn.execute("SELECT COALESCE(MAX(run_id), 0) FROM main.runs").fetchone()
                offset = int(row[0])

                def copy(table: str, suffix: str = "", **shifted: str) -> None:
                    names = [
                        str(column[1])
                        for column in conn.execute(f"PRAGMA main.table_info({table})")
                    ]
                    chosen = ", ".join(shifted.get(name, name) for name in names)
                    conn.execute(
                        f"INSERT INTO main.{table} ({', '.join(names)}) "
                        f"SELECT {chosen} FROM other.{table} WHERE true {suffix}"
                    )

                copy("jobs")
                copy("runs", run_id=f"run_id + {offset}")
                copy("attempts", run_id=f"run_id + {offset}")
                copy("tasks")
                copy("takes")
                copy(
                    "uploads",
                    "ON CONFLICT(target, sha256) DO UPDATE SET url = excluded.url, "
                    "expires_at = excluded.expires_at, size = excluded.size, "
                    "sent_bytes = excluded.sent_bytes, published_at = excluded.published_at "
                    "WHERE excluded.published_at > uploads.published_at",
                )
        finally:
            self.conn.execute("DETACH DATABASE other")
