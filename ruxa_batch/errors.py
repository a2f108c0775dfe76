"""Exit codes, the expected-failure exception classes, and the one error boundary.

Every failure a user can cause or fix is a :class:`RuxaBatchError` subclass carrying its exit
code and a one-line message. The boundary (:func:`run_guarded`) prints those without a
traceback; anything else is a bug, so its traceback goes to a log file whose path is printed.
"""

from __future__ import annotations

import errno
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from ruxa_batch.statuses import JobStatus

# Documented exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_INVALID = 2
EXIT_API_STOPPED = 3
EXIT_UNFINISHED = 4  # no job failed, but some were left for a later run: run the same command again
EXIT_ENVIRONMENT = 74  # EX_IOERR: a full disk, a read-only folder, a damaged state file
EXIT_INTERRUPTED = 130
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a bug; the traceback is in a log file


def exit_code_for_jobs(counts: Mapping[str, int]) -> int:
    """What the jobs' statuses say as an exit code: 1 when some failed or are uncertain, else
    4 when some are pending or running, else 0. ``run`` and ``status --check`` share it."""
    if counts.get(JobStatus.FAILED, 0) or counts.get(JobStatus.UNCERTAIN, 0):
        return EXIT_JOBS_FAILED
    if counts.get(JobStatus.PENDING, 0) or counts.get(JobStatus.RUNNING, 0):
        return EXIT_UNFINISHED
    return EXIT_OK


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located as precisely as we can."""

    file: str
    line: int  # 1-based; 0 when the location is unknown
    col: int  # 1-based; 0 when the location is unknown
    path: str  # JSON path inside the document, e.g. "$.jobs[0].prompt"
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where = f"{where}:{self.line}:{self.col or 1}"
        return f"{where}: {self.path}: {self.message}"


class RuxaBatchError(Exception):
    """An expected failure: printed as one line, no traceback."""

    exit_code: int = EXIT_INVALID

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def lines(self) -> list[str]:
        """The lines to print for this error (most errors have exactly one)."""
        return [f"error: {self.message}"]


class UsageError(RuxaBatchError):
    """Bad command-line use that click itself cannot detect."""


class ManifestInvalid(RuxaBatchError):
    """One or more problems in a manifest (or a file it refers to)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} found")

    def lines(self) -> list[str]:
        return [str(problem) for problem in self.problems]


class EnvironmentProblem(RuxaBatchError):
    """The machine is in the way, not the input: a full disk, a read-only folder, a damaged
    file. Whatever was recorded before is kept; the same command continues once it is fixed."""

    exit_code = EXIT_ENVIRONMENT


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def os_reason(exc: OSError) -> str:
    """What an OSError means, in a few words (the same words whatever the platform says)."""
    if exc.errno in _DISK_FULL:
        return "the disk is full"
    if exc.errno in _READ_ONLY:
        return "the file system or folder is read-only"
    return exc.strerror or type(exc).__name__


def cannot_write(shown: str, exc: OSError) -> EnvironmentProblem:
    """The error for a file that could not be written, with what to do about it."""
    if exc.errno in _DISK_FULL:
        advice = "free some space and run the command again"
    elif exc.errno in _READ_ONLY:
        advice = "make it writable or choose another place"
    else:
        advice = "fix that and run the command again"
    return EnvironmentProblem(f"cannot write {shown}: {os_reason(exc)}; {advice}")


def emit(lines: Sequence[str], stream: TextIO | None = None) -> None:
    """Write lines to a stream (stderr by default), ignoring a closed pipe."""
    out = stream if stream is not None else sys.stderr
    try:
        for line in lines:
            out.write(line + "\n")
        out.flush()
    except BrokenPipeError:  # pragma: no cover - e.g. `ruxa-batch plan | head`
        pass


# What a secret looks like in a traceback: an Authorization header's value (the key checks in
# the runner keep it out of headers, but a log file outlives any one check), a bearer token, a
# Ruxa key anywhere. The value runs to the end of a quoted string or a line.
_SECRETS = re.compile(
    r"""(?ix)
    (?P<header> authorization ['"]? \s* [:=,] \s* ['"]? (?:bearer\s+)? ) [^'"\r\n]+
    | (?P<bearer> \bbearer\s+ ) [^\s'"]+
    | (?P<key> ) \bsk-[A-Za-z0-9_\-]{4,}
    """
)


def scrub_secrets(text: str) -> str:
    """``text`` with header values, bearer tokens and anything shaped like a key replaced."""

    def hide(match: re.Match[str]) -> str:
        prefix = match.group("header") or match.group("bearer") or ""
        return f"{prefix}[redacted]"

    return _SECRETS.sub(hide, text)


def _write_crash_log(exc: BaseException) -> str | None:
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        handle, path = tempfile.mkstemp(prefix="ruxa-batch-crash-", suffix=".log")
        with open(handle, "w", encoding="utf-8") as log:
            log.write(scrub_secrets(text))
        return path
    except OSError:
        return None


def run_guarded(body: Callable[[], int]) -> int:
    """Run ``body`` inside the error boundary and return the process exit code."""
    try:
        return body()
    except RuxaBatchError as exc:
        emit(exc.lines())
        return exc.exit_code
    except KeyboardInterrupt:
        emit(["interrupted"])
        return EXIT_INTERRUPTED
    except Exception as exc:
        log_path = _write_crash_log(exc)
        where = f"; the traceback is in {log_path}" if log_path else ""
        emit(
            [
                f"internal error: {type(exc).__name__}: this is a bug in ruxa-batch{where}",
                "please report it with that file attached",
            ]
        )
        return EXIT_SOFTWARE
