"""The sandbox's data file: its tasks and counters in SQLite, so a restarted sandbox keeps them.

One class, :class:`SandboxStore`, owns ``<folder>/sandbox.sqlite``: opening it, its numbered
migrations (``PRAGMA user_version``), the one-sandbox-at-a-time lock and every query.

- A task is committed with ``synchronous=FULL`` before its create is answered, so a client that
  holds a task ID can query it after the sandbox is killed and started again.
- Times are stored as wall-clock milliseconds since the epoch. A restored task gets a monotonic
  create time of this process computed from them, so it continues where it stood: a task created
  1.5 s before the stop with a 2 s generation time ends 0.5 s after a quick restart.
- The result pictures are not stored: they are drawn again from the task ID, size and format
  (and the task's input picture, kept by content in ``uploads/`` or ``inputs/`` beside the file:
  :mod:`ruxa_batch.sandbox.blobs`).
- The API key is never stored, in any form; a restarted sandbox gets its key as at every start.

The file is opened in SQLite's exclusive locking mode: a second sandbox on the same folder is
refused at once (the lock dies with its process), since two servers would overwrite each other's
counters.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ruxa_batch.errors import EXIT_INVALID, RuxaBatchError
from ruxa_batch.sandbox.rules import Output
from ruxa_batch.sandbox.tasks import Task

DATA_FILENAME = "sandbox.sqlite"

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        request TEXT NOT NULL,  -- the create body as received, JSON
        body_hash TEXT NOT NULL,
        output_format TEXT NOT NULL,
        aspect TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        create_ms INTEGER NOT NULL,  -- wall clock, ms since the epoch
        duration REAL NOT NULL,  -- seconds from create to the end
        fail_code TEXT,  -- both set when the task ends in `fail`
        fail_msg TEXT,
        callback_url TEXT
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: the first input picture a task read, by content (png, jpg or webp)
    """
    ALTER TABLE tasks ADD COLUMN input_sha256 TEXT;
    ALTER TABLE tasks ADD COLUMN input_ext TEXT
    """,
)

_TASK_COLUMNS = (
    "task_id, request, body_hash, output_format, aspect, width, height, create_ms, duration, "
    "fail_code, fail_msg, callback_url, input_sha256, input_ext"
)


class SandboxDataError(RuxaBatchError):
    """The sandbox's data file cannot be used: damaged, newer, or held by another sandbox."""

    exit_code = EXIT_INVALID


class SandboxStore:
    """The tasks and counters of one sandbox, in ``<folder>/sandbox.sqlite``.

    Not thread-safe by itself: the sandbox calls it with its own lock held.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / DATA_FILENAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SandboxDataError(
                f"cannot create the sandbox data folder {folder}: {exc.strerror or exc}"
            ) from None
        try:
            # timeout=0: a held lock is reported at once instead of waiting for it.
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=0, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise SandboxDataError(f"cannot open sandbox data {self.path}: {exc}") from None
        try:
            self._conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._migrate()
        except sqlite3.OperationalError as exc:
            self._conn.close()
            if "locked" in str(exc):
                raise SandboxDataError(
                    f"another sandbox is using {self.path} (a `ruxa-batch run --sandbox` or "
                    "`ruxa-batch sandbox`); stop it first"
                ) from None
            raise SandboxDataError(f"cannot use sandbox data {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise SandboxDataError(f"cannot use sandbox data {self.path}: {exc}") from None
        except SandboxDataError:
            self._conn.close()
            raise

    def close(self) -> None:
        """Close the file, releasing the lock."""
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        # BEGIN EXCLUSIVE takes (and, in exclusive locking mode, keeps) the write lock now.
        self._conn.execute("BEGIN EXCLUSIVE")
        try:
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise SandboxDataError(
                    f"{self.path} was written by a newer ruxa-batch; upgrade to use it"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- tasks ------------------------------------------------------------------------------------

    def add_task(self, task: Task, counters: Mapping[str, int]) -> None:
        """Record a new task and the counters with it, on disk before this returns."""
        fail_code, fail_msg = task.fail or (None, None)
        with self._transaction():
            self._conn.execute(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                (
                    task.task_id,
                    json.dumps(task.request, ensure_ascii=False, separators=(",", ":")),
                    task.body_hash,
                    task.output.output_format,
                    task.output.aspect,
                    task.width,
                    task.height,
                    task.create_ms,
                    task.duration,
                    fail_code,
                    fail_msg,
                    task.callback_url,
                    task.input_sha256,
                    task.input_ext,
                ),
            )
            self._write_counters(counters)

    def tasks(self) -> list[Task]:
        """Every stored task, oldest first, placed on this process's monotonic clock."""
        # The two clocks read together: a task's age is the same on both.
        offset = time.monotonic() - time.time()
        rows = self._conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks ORDER BY rowid").fetchall()
        return [
            Task(
                task_id=task_id,
                request=json.loads(request),
                body_hash=body_hash,
                output=Output(output_format, aspect),
                width=width,
                height=height,
                created=create_ms / 1000 + offset,
                create_ms=create_ms,
                duration=duration,
                fail=(fail_code, fail_msg) if fail_code is not None else None,
                callback_url=callback_url,
                input_sha256=input_sha256,
                input_ext=input_ext,
            )
            for (
                task_id,
                request,
                body_hash,
                output_format,
                aspect,
                width,
                height,
                create_ms,
                duration,
                fail_code,
                fail_msg,
                callback_url,
                input_sha256,
                input_ext,
            ) in rows
        ]

    # -- counters and the port ------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """The counters as last saved."""
        return dict(self._conn.execute("SELECT name, value FROM counters").fetchall())

    def save_counters(self, counters: Mapping[str, int]) -> None:
        """Save the counters."""
        with self._transaction():
            self._write_counters(counters)

    def _write_counters(self, counters: Mapping[str, int]) -> None:
        self._conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            counters.items(),
        )

    def port(self) -> int | None:
        """The port the last sandbox on this data listened on."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'port'").fetchone()
        return int(row[0]) if row else None

    def save_port(self, port: int) -> None:
        """Remember the port, so the next start can offer the same result URLs."""
        with self._transaction():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('port', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(port),),
            )
