"""Every closed set of values the program records or decides on, declared once.

Job statuses, task states, attempt outcomes and the reasons a run stops are enums whose values
are the exact strings written to the state file and the results; code and SQL use the names.
"""

from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    """An enum whose members act as their value where a string is expected (SQL, JSON, text)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class JobStatus(_Word):
    """Where a job stands, as stored and as shown in the results."""

    SUCCEEDED = "succeeded"  # its pictures are on disk (or its URLs recorded, --no-download)
    FAILED = "failed"  # every attempt failed, or the API refused the request
    RUNNING = "running"  # a create is on its way, or a task exists and is not finished
    PENDING = "pending"  # no task yet
    UNCERTAIN = "uncertain"  # a create's answer was lost and --at-most-once forbids another


# The order in which counts are shown.
JOB_STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)
# Statuses a run does not change without a --retry-... flag.
FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED})


class TaskState(_Word):
    """A task's state as recorded: the API's states (normalised) and our own timeout."""

    WAITING = "waiting"
    QUEUING = "queuing"
    GENERATING = "generating"
    SUCCESS = "success"  # the API also says "completed"
    FAIL = "fail"
    TIMEOUT = "timeout"  # ours: unfinished after --task-timeout
    UNKNOWN = "unknown"  # a state the API documents nowhere; treated as still running

    @property
    def finished(self) -> bool:
        """Whether the task will not change any more."""
        return self in (TaskState.SUCCESS, TaskState.FAIL, TaskState.TIMEOUT)


class AttemptOutcome(_Word):
    """What became of one create request (one row of the ``attempts`` table)."""

    SENDING = "sending"  # written before the request leaves; still there: its fate is unknown
    CREATED = "created"  # the API answered with a task ID
    AMBIGUOUS = "ambiguous"  # it may have reached the API, but no usable answer came
    REJECTED = "rejected"  # the API answered with an error: no task exists


class StopReason(_Word):
    """Why a run stopped before driving every job to its end."""

    CREDITS = "credits"  # 402: no more creates; running tasks finish
    AUTH = "auth"  # 401: no more requests of any kind
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
    MAX_TASKS = "max_tasks"  # the --max-tasks cap was reached


class FailureClass(_Word):
    """Why a job's task failed, as far as a retry is concerned (see :mod:`ruxa_batch.failures`)."""

    REQUEST = "request"  # the request itself is at fault: a new task would fail the same way
    TRANSIENT = "transient"  # the API or the moment is at fault: a new task may succeed


class CheckStatus(_Word):
    """The verdict of ``validate --format json`` (check-jsonschema's words)."""

    OK = "ok"
    FAIL = "fail"


# The statuses of the jobs `redo` may make again: each has a finished take to keep.
REDOABLE: tuple[JobStatus, ...] = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.UNCERTAIN)
