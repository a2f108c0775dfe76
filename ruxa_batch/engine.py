"""The run engine: carries out each job's decision, from "pending" to "succeeded" (or "failed"),
crash-safely.

What happens to a job is decided by :func:`ruxa_batch.decide.decide` (the same function ``plan``
and the cost estimate use); the engine carries it out. Each job is one coroutine that walks the
job's life: create a task (write-ahead, see :mod:`ruxa_batch.state`), poll it with per-task
backoff, download its pictures, record them. Every step's outcome is committed to the state file
before the next step starts, so killing the process at any instant loses nothing.

Every request that may be repeated goes through one :class:`~ruxa_batch.retry.Retrier`, with the
policies below; time comes from an injected :class:`~ruxa_batch.timing.Timer`.

Tasks in flight are not connections in flight: thousands of tasks may be running on the server,
while the client keeps only ``concurrency`` requests open and shares one rate limit.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ruxa_batch.client import (
    ApiError,
    AuthRejected,
    BadAnswer,
    CreditsExhausted,
    DownloadRejected,
    InvalidRequest,
    NoAnswer,
    NotFound,
    NotSent,
    RateLimited,
    RuxaClient,
    ServerError,
    UnusableResult,
    UrlExpired,
    Withdrawn,
)
from ruxa_batch.decide import IDLE, Action, Decision, Options, decide, pictures_on_disk, settled
from ruxa_batch.errors import RuxaBatchError, os_reason
from ruxa_batch.failures import DEFAULT_RULES, FailureRules, classify
from ruxa_batch.jobs import Job, Manifest, identities
from ruxa_batch.local_files import LocalFile
from ruxa_batch.models import get_model
from ruxa_batch.pictures import Ledger, Picture
from ruxa_batch.retry import GaveUp, Halted, Retrier, RetryPolicy
from ruxa_batch.state import JobRecord, StateStore, chunked
from ruxa_batch.statuses import AttemptOutcome, FailureClass, JobStatus, StopReason, TaskState
from ruxa_batch.timing import Timer
from ruxa_batch.uploads import Publisher, UploadFailed, UploadStopped

# How many times in a row one request may fail on the network or with a 5xx before the job is
# left for a later run; a task the API no longer knows (404) gets fewer, but only after 404s
# spread over at least NOT_FOUND_PATIENCE seconds (a task the API accepted is not given up on
# a moment's inconsistency).
TRANSIENT_TRIES = 6
NOT_FOUND_TRIES = 3
NOT_FOUND_PATIENCE = 60.0
MAX_POLL_DELAY = 30.0
POLL_GROWTH = 1.5
CALLBACK_POLL_FACTOR = 4.0

_TRANSIENT: dict[type[Exception], int] = {
    NotSent: TRANSIENT_TRIES,  # nothing left this machine
    ServerError: TRANSIENT_TRIES,  # the API answered that it failed: no task was made
}
# A create whose request may have reached the API: repeating it may pay twice, so it is retried
# only when the run allows it (not with --at-most-once), and each one is flagged.
_AMBIGUOUS: dict[type[Exception], int] = {
    NoAnswer: TRANSIENT_TRIES,
    BadAnswer: TRANSIENT_TRIES,
}
CREATE = RetryPolicy(on={**_TRANSIENT, **_AMBIGUOUS}, free=(RateLimited,))
CREATE_AT_MOST_ONCE = RetryPolicy(on=_TRANSIENT, free=(RateLimited,))
# A status query is safe to repeat. Errors that make no sense for a query (402, 422) are
# retried like a server error; a 401 is not retried: it halts the run.
QUERY = RetryPolicy(
    on={
        NotFound: NOT_FOUND_TRIES,
        **_TRANSIENT,
        **_AMBIGUOUS,
        InvalidRequest: TRANSIENT_TRIES,
        CreditsExhausted: TRANSIENT_TRIES,
    },
    free=(RateLimited,),
    patience={NotFound: NOT_FOUND_PATIENCE},
)
DOWNLOAD = RetryPolicy(on={**_TRANSIENT, **_AMBIGUOUS})


# A job's life takes about three API requests (a create, a query or more, nothing for the
# download); the window holds the jobs of WINDOW_SECONDS of creates at the full rate limit.
WINDOW_SECONDS = 60.0
REQUESTS_PER_JOB = 3.0
MAX_WINDOW = 10_000


def window_size(*, rate_limit: float, concurrency: int) -> int:
    """How many jobs the engine drives at once.

    Jobs in the window make ``rate_limit / REQUESTS_PER_JOB`` jobs per second at most; so that
    the rate limit and not the window bounds throughput, the window holds every job started in
    ``WINDOW_SECONDS`` at that pace, so tasks taking up to three minutes
    (``WINDOW_SECONDS * REQUESTS_PER_JOB``) keep the rate limit busy. At least four jobs per
    connection, at most MAX_WINDOW: jobs waiting to start cost a row in the state, not memory.
    """
    wanted = math.ceil(rate_limit * WINDOW_SECONDS)
    return max(4 * concurrency, min(MAX_WINDOW, wanted))


@dataclass(frozen=True)
class EngineOptions:
    """What the engine needs to know beyond the manifest."""

    output_dir: Path
    decisions: Options  # what to do with each job (shared with plan)
    poll_interval: float
    task_timeout: float
    max_download_bytes: int
    backoff_base: float = 1.0
    seed: int | None = None
    max_tasks: int | None = None  # hard cap on creates in this run
    window: int = 10_000  # jobs driven at once (see window_size)
    failure_rules: FailureRules = DEFAULT_RULES  # which task failures are not worth a new task


@dataclass
class RunOutcome:
    """What happened during one run."""

    tasks_created: int = 0
    possible_tasks: int = 0  # creates whose answer was lost: each may have made a task
    stopped_by: StopReason | None = None
    not_submitted: int = 0
    unknown_states: set[str] = field(default_factory=set)
    # Bugs met while driving a job: that job is left for a later run, the others go on, and
    # the first one is reported once the results are written.
    internal_errors: list[Exception] = field(default_factory=list)
    files_published: int = 0  # local pictures published (uploaded, re-signed or checked)
    upload_bytes_sent: int = 0


class Events:
    """Hooks for progress display; the default does nothing."""

    def job_started(self, job: Job, *, has_task: bool) -> None:
        """This run starts driving ``job`` (``has_task``: an earlier run created its task)."""

    def job_submitted(self, job: Job, task_id: str) -> None:
        """A task was created for ``job``."""

    def job_finished(self, job: Job, status: JobStatus, message: str | None) -> None:
        """``job`` reached a status this run will not change (or was left for a later run)."""

    def task_failed(
        self, job: Job, task_id: str, message: str, failure: FailureClass, *, retry: bool
    ) -> None:
        """A task of ``job`` failed (``retry``: a new task follows)."""

    def warn(self, message: str) -> None:
        """Something the user should know about."""

    def uploads_planned(self, files: int, size: int) -> None:
        """This run publishes ``files`` local pictures of ``size`` bytes in all."""

    def upload_finished(self, file: LocalFile, *, sent: int, error: str | None) -> None:
        """One local picture is published (``sent`` bytes went out), or failed with ``error``."""


class StaleUrls(Exception):
    """At the last moment before a create leaves, one of its input URLs would expire before the
    task could start (the create waited long for its turn): renew them and queue again."""


@dataclass(frozen=True)
class _Watched:
    """How watching a task ended: a finished state, or None when it is left unfinished."""

    state: TaskState | None
    urls: tuple[str, ...] = ()
    message: str = ""
    gone: bool = False  # the API stopped knowing the task: it may still run and be billed
    failure: FailureClass = FailureClass.TRANSIENT  # for a failed task: is a new one worth it


class Engine:
    """Runs the jobs of one manifest against one API endpoint."""

    def __init__(
        self,
        manifest: Manifest,
        store: StateStore,
        client: RuxaClient,
        options: EngineOptions,
        *,
        events: Events | None = None,
        timer: Timer | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.manifest = manifest
        self.publisher = publisher  # where local pictures get their URLs
        self.store = store
        self.client = client
        self.options = options
        self.events = events or Events()
        self.timer = timer if timer is not None else client.limiter.timer
        self.outcome = RunOutcome()
        self.stop_creating = False  # 402 or a halt: no more creates, but finish what is running
        self.halted = False  # 401 or Ctrl-C: no more requests of any kind
        self.in_flight = 0  # creates sent and not answered yet
        self.holding = 0  # creates that hold a rate-limit token and wait for a connection
        self.preparing = 0  # jobs publishing their local pictures before a create
        self._room = asyncio.Event()  # set (and replaced) when a place under the cap may free
        self.capped = False  # the --max-tasks cap stopped a create
        self._ledger: Ledger | None = None
        self.retrier = Retrier(
            timer=self.timer,
            sleep=self.pause,
            halted=lambda: self.halted,
            rng=random.Random(options.seed),
        )
        base = options.backoff_base
        at_most_once = options.decisions.at_most_once
        self.create_policy = (CREATE_AT_MOST_ONCE if at_most_once else CREATE).with_base(base)
        self.query_policy = QUERY.with_base(base)
        self.download_policy = DOWNLOAD.with_base(base)

    # -- the run ---------------------------------------------------------------------------

    def settle(self, job: Job, decision: Decision, record: JobRecord | None) -> None:
        """Record what a decision changes before any request (a lost create, a fresh start)."""
        if decision.lost_create:
            assert record is not None and record.open_attempt is not None
            self.store.close_attempt(
                job.key,
                record.open_attempt,
                AttemptOutcome.AMBIGUOUS,
                "a run stopped before the API answered this create",
            )
            if decision.action == Action.KEEP_UNCERTAIN:
                self.store.set_status(
                    job.key,
                    JobStatus.UNCERTAIN,
                    error="a create may have reached the API but its answer was lost; "
                    "rerun with --retry-uncertain to submit it again",
                    possible_duplicate=True,
                )
                return
        if decision.action == Action.RETRY:
            self.store.set_status(
                job.key,
                JobStatus.PENDING,
                reset_attempts=True,
                possible_duplicate=True if decision.lost_create else None,
            )
        elif decision.action == Action.RESUBMIT:
            self.store.set_status(job.key, JobStatus.PENDING, possible_duplicate=True)

    async def run(self) -> RunOutcome:
        """Drive every job that needs it; returns when all are done or the run must stop."""
        files_present = pictures_on_disk(self.options.output_dir, self.manifest)

        def decided(*, settle: bool) -> Iterator[tuple[Job, Decision, JobRecord | None]]:
            # One job at a time, as the window takes it: a job waiting to start costs its row
            # in the state, not a coroutine, a record or a decision in memory. The state is
            # read a few hundred jobs at a time, each read recording the new jobs among them.
            jobs = self.manifest.jobs
            start = 0
            for part in chunked(identities(jobs)):
                numbers = range(start, start + len(part))
                start += len(part)
                keys = [key for key, _, _ in part]
                marks = self.store.marks_of(keys)
                # New jobs, and renamed ones (a new id for the same request), are recorded first.
                changed = [
                    number
                    for number, (key, name, variant) in zip(numbers, part, strict=True)
                    if key not in marks or (marks[key].id, marks[key].variant) != (name, variant)
                ]
                if settle and changed:
                    self.record_jobs([jobs[number] for number in changed])
                    marks = self.store.marks_of(keys)
                # Finished jobs this run leaves alone are not read further, nor even made.
                busy = [
                    jobs[number]
                    for number, key in zip(numbers, keys, strict=True)
                    if key not in marks
                    or marks[key].in_doubt
                    or not settled(marks[key].status, options)
                ]
                records = self.store.records_of([job.key for job in busy]) if busy else {}
                for job in busy:
                    record = records.get(job.key)
                    decision = decide(
                        record, options, files_present=functools.partial(files_present, job)
                    )
                    if decision.action not in IDLE:
                        yield job, decision, record
                    elif settle:
                        self.settle(job, decision, record)  # a lost create: now uncertain

        options = self.options.decisions
        if self.publisher is not None:
            # Uploads begin at once, on their own limit: a job then waits only for its files.
            # Under a cap, only the files of the jobs the cap lets through (others are
            # published when a job asks, if it ever may).
            creating: Iterator[Job] = (
                job for job, decision, _ in decided(settle=False) if decision.creates_now
            )
            if self.options.max_tasks is not None:
                creating = itertools.islice(creating, self.options.max_tasks)
            self.publisher.start(file for job in creating for file in job.local_files)
        source = decided(settle=True)

        async def worker() -> None:
            for job, decision, record in source:
                if self.halted:
                    return  # the jobs not taken yet stay as the state has them
                self.settle(job, decision, record)
                if decision.creates_now and self.cannot_create():
                    # Creating stopped (a 402, the cap): counted, never started.
                    self.note_cap()
                    self.not_submitted(job)
                    continue
                await self.guarded(job, decision, record)

        workers = [asyncio.ensure_future(worker()) for _ in range(self.options.window)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            if self.publisher is not None:
                self.outcome.files_published = self.publisher.published
                self.outcome.upload_bytes_sent = self.publisher.sent_bytes
        return self.outcome

    def record_jobs(self, jobs: Sequence[Job]) -> None:
        """Record ``jobs`` (new, or renamed: a new id for a recorded request) as pending, or
        with their new id, before any of them is driven."""
        self.store.ensure_jobs(
            (job.key, job.id, job.variant, json.dumps(self.body(job), sort_keys=True))
            for job in jobs
        )

    async def guarded(self, job: Job, decision: Decision, record: JobRecord | None) -> None:
        """Drive one job; a bug met on the way costs that job, not the batch."""
        try:
            await self.drive(job, decision, record)
        except RuxaBatchError:
            raise  # an expected failure of the run as a whole (a full disk): stop
        except Exception as exc:
            # The job's state is what its last committed step left, which the next run
            # continues from; nothing is written for it now.
            self.outcome.internal_errors.append(exc)
            self.events.job_finished(job, JobStatus.RUNNING, f"internal error ({exc!r})")

    def body(self, job: Job, urls: dict[str, str] | None = None) -> dict[str, object]:
        """The create request body for ``job``: with the URLs its local pictures are published
        at, what is sent; without, what is stored (local pictures by sha256, the same bytes
        every time)."""
        return self.manifest.request_body(job, urls)

    def halt(self, reason: StopReason) -> None:
        """Stop sending requests (401 or Ctrl-C): requests in flight finish and are recorded,
        waiting jobs wake up and leave, and no job changes status because of the stop."""
        if self.halted:
            return
        self.halted = True
        self.stop_creating = True
        self.outcome.stopped_by = reason
        self.client.limiter.open()
        self.timer.wake_all()
        self.stop_publishing()
        self.room_changed()

    def gate(self) -> None:
        """``before_send`` hook of status queries: nothing leaves once the run halts."""
        if self.halted:
            raise Withdrawn

    async def pause(self, seconds: float) -> None:
        """Sleep, unless the run halts first."""
        if not self.halted:
            await self.timer.sleep(seconds)

    async def drive(self, job: Job, decision: Decision, record: JobRecord | None) -> None:
        """One job's whole life in this run, starting from its decision and its record."""
        attempts = decision.attempts_used
        has_task = decision.action in (Action.POLL, Action.DOWNLOAD)
        self.events.job_started(job, has_task=has_task)
        task_id: str | None = None
        age = 0.0  # how long the task being watched has existed already
        if record is not None and has_task:
            task_id = record.task_id
            age = record.task_age()
            if decision.action == Action.DOWNLOAD or (
                record.task_state == TaskState.SUCCESS and record.result_urls
            ):
                # Known to have succeeded: straight to the download.
                await self.fetch(job, task_id, record.result_urls, record)
                return
        while True:
            if task_id is None:
                if attempts >= self.options.decisions.max_attempts:
                    self.finish(
                        job,
                        JobStatus.FAILED,
                        f"gave up after {attempts} tasks",
                        failure=FailureClass.TRANSIENT,
                    )
                    return
                if job.local_files and not await self.room_to_publish():
                    # Nothing will be sent for it (the cap, a 402, a halt): no upload either.
                    self.note_cap()
                    self.not_submitted(job)
                    return
                urls = await self.published(job)
                if urls is None:
                    return
                try:
                    task_id = await self.submit(job, urls)
                except StaleUrls:
                    continue  # renewed at the top of the loop, then queued again
                if task_id is None:
                    return
                attempts += 1
                self.events.job_submitted(job, task_id)
            watched = await self.watch(task_id, age=age, slower=self.polls_less(job))
            age = 0.0
            if watched.state == TaskState.SUCCESS:
                await self.fetch(job, task_id, watched.urls, record)
                return
            if watched.state is None:
                if self.halted:
                    self.events.job_finished(job, JobStatus.RUNNING, watched.message)
                else:
                    self.leave(job, JobStatus.RUNNING, watched.message)
                return
            if watched.gone:
                # The API forgot the task, which may still be billed: a new one may pay twice.
                self.store.flag_possible_duplicate(job.key)
            # The task failed or timed out: a new attempt, if any is left and it may succeed.
            retry = (
                watched.failure == FailureClass.TRANSIENT
                and attempts < self.options.decisions.max_attempts
            )
            self.events.task_failed(job, task_id, watched.message, watched.failure, retry=retry)
            if not retry:
                message = watched.message
                if watched.failure == FailureClass.REQUEST:
                    message = f"{message}; not retried: the request itself is at fault"
                self.finish(job, JobStatus.FAILED, message, failure=watched.failure)
                return
            task_id = None

    def finish(
        self,
        job: Job,
        status: JobStatus,
        message: str | None,
        *,
        failure: FailureClass | None = None,
    ) -> None:
        """Record a final status for this run (a failed job with its failure's class)."""
        if status == JobStatus.FAILED and failure is None:
            # The API refused the request, or the result cannot be taken (too big, a name
            # outside the folder): a new task would end the same way.
            failure = FailureClass.REQUEST
        self.store.set_status(job.key, status, error=message, failure=failure)
        self.events.job_finished(job, status, message)

    def leave(self, job: Job, status: JobStatus, reason: str) -> None:
        """Leave a job for a later run after repeated network or server errors."""
        self.store.set_status(job.key, status, error=f"left for a later run: {reason}")
        self.events.job_finished(job, status, reason)

    # -- creating a task (the paid step) -------------------------------------------------------

    async def published(self, job: Job) -> dict[str, str] | None:
        """The URLs of ``job``'s local pictures, each valid long enough for its task to start;
        None when one cannot be published (the job stays pending, nothing is paid)."""
        files = job.local_files
        if not files:
            return {}
        if self.publisher is None:  # the runner refuses such a run before it starts
            raise RuntimeError("a job sends local pictures but the run has no publisher")
        try:
            return await self.publisher.urls_for(files)
        except UploadFailed as exc:
            self.leave(job, JobStatus.PENDING, f"upload failed: {exc}")
            return None
        except UploadStopped:  # creating stopped (Ctrl-C, a 402) while it waited
            if self.halted:
                self.events.job_finished(job, JobStatus.PENDING, "the run stopped")
            else:
                self.not_submitted(job)
            return None
        finally:
            self.preparing -= 1  # taken by room_to_publish
            self.room_changed()

    async def room_to_publish(self) -> bool:
        """Wait until one more job may publish its local pictures for a create.

        Under --max-tasks the jobs publishing count as creates here (not in the cap itself), so
        the pictures of the jobs the cap will stop are not uploaded; a place taken by a job
        whose upload fails is given back: a failed upload never counts against the cap. False
        when no create will leave any more: creating stopped, or the tasks made (and possibly
        made) reach the cap.
        """
        cap = self.options.max_tasks
        while not (self.stop_creating or self.capped):
            if cap is None or self.used() + self.preparing < cap:
                self.preparing += 1
                return True
            if self.outcome.tasks_created + self.outcome.possible_tasks >= cap:
                return False
            await self._room.wait()
        return False

    def room_changed(self) -> None:
        """Wake the jobs waiting in :meth:`room_to_publish` (a create ended, creating stopped)."""
        self._room.set()
        self._room = asyncio.Event()

    async def submit(self, job: Job, urls: dict[str, str]) -> str | None:
        """Create a task for ``job``; None when the job leaves this run without one."""
        try:
            return await self.retrier.call(self.create_policy, lambda: self.create_once(job, urls))
        except (Withdrawn, Halted):
            pass  # no more creates in this run: the job stays pending
        except GaveUp as exc:
            self.leave(job, JobStatus.PENDING, exc.reason or describe(exc.last))
            return None
        except CreditsExhausted as exc:
            if not self.stop_creating:
                self.events.warn(f"the API reports insufficient credits (402): {exc.message}")
            self.stop_creates(StopReason.CREDITS)
        except AuthRejected:
            self.halt(StopReason.AUTH)
        except InvalidRequest as exc:
            self.finish(job, JobStatus.FAILED, f"the API rejected the request (422): {exc.message}")
            return None
        except NotFound as exc:
            self.finish(
                job, JobStatus.FAILED, f"the create endpoint was not found (404): {exc.message}"
            )
            return None
        except (NoAnswer, BadAnswer) as exc:  # only with --at-most-once: not retried
            self.finish(
                job,
                JobStatus.UNCERTAIN,
                f"the create may have reached the API but no answer came ({describe(exc)}); "
                "rerun with --retry-uncertain to submit it again",
            )
            return None
        self.not_submitted(job)
        return None

    def not_submitted(self, job: Job) -> None:
        """Record that ``job`` leaves this run without a create (creating stopped)."""
        if not self.halted:
            self.outcome.not_submitted += 1
        self.store.set_status(job.key, JobStatus.PENDING)
        self.events.job_finished(job, JobStatus.PENDING, "not submitted")

    async def create_once(self, job: Job, urls: dict[str, str]) -> str:
        """One create request, recorded: write-ahead before it leaves, its outcome after."""
        try:
            return await self._create_once(job, urls)
        finally:
            self.room_changed()

    async def _create_once(self, job: Job, urls: dict[str, str]) -> str:
        if self.cannot_create():
            self.note_cap()
            raise Withdrawn
        numbers: list[int] = []
        holds = [False]

        def granted() -> None:
            # A token is a place under the cap: counted, so that creates further back in the
            # queue leave without one when the cap is reached.
            holds[0] = True
            self.holding += 1

        def intend() -> None:
            # Every create passes here, at the last moment before it leaves: the cap is
            # checked and the write-ahead record committed (a create still waiting for a
            # token or a connection is neither counted nor ambiguous if we die).
            holds[0] = False
            self.holding -= 1
            if self.cannot_create():
                self.note_cap()
                raise Withdrawn
            if urls and self.publisher is not None and not self.publisher.still_good(urls):
                raise StaleUrls
            numbers.append(self.store.begin_attempt(job.key))
            self.in_flight += 1

        try:
            try:
                task_id = await self.client.create(
                    self.body(job, urls),
                    before_send=intend,
                    abandon=self.cannot_create,
                    granted=granted,
                )
            finally:
                if holds[0]:  # left between its token and its connection (cancelled)
                    holds[0] = False
                    self.holding -= 1
        except Withdrawn:
            self.note_cap()
            raise
        except Exception as exc:
            if not numbers:
                raise  # failed before the request could leave: a bug, not an API answer
            self.in_flight -= 1
            self.record_failed_create(job, numbers[0], exc)
            raise
        self.in_flight -= 1
        owner = self.store.task_owner(task_id)
        if owner is not None:
            # The API handed out a task ID that another job already has: this answer cannot be
            # trusted, and a task may have been made for this job under an ID we never saw.
            error = BadAnswer(f"the API answered with task ID {task_id}, which another job has")
            self.record_failed_create(job, numbers[0], error)
            raise error
        self.store.record_task(job.key, numbers[0], task_id)
        self.outcome.tasks_created += 1
        return task_id

    def cannot_create(self) -> bool:
        """Whether a queued create may no longer be sent: creating stopped, or the creates
        sent and holding tokens already reach the cap (``abandon`` hook of queued creates)."""
        return self.stop_creating or not self.within_cap()

    def note_cap(self) -> None:
        """When the cap is what stops a create, say so once and clear the queue of creates."""
        if not self.stop_creating and not self.within_cap() and not self.capped:
            self.capped = True
            self.outcome.stopped_by = self.outcome.stopped_by or StopReason.MAX_TASKS
            self.client.limiter.sweep()
            self.room_changed()

    def stop_creates(self, reason: StopReason) -> None:
        """No more creates in this run (402 or the cap); running tasks are still followed.

        Creates queued for a rate-limit token leave the queue at once, without a token, so
        the status queries behind them are not held up.
        """
        self.stop_creating = True
        self.outcome.stopped_by = self.outcome.stopped_by or reason
        self.client.limiter.sweep()
        self.stop_publishing()
        self.room_changed()

    def stop_publishing(self) -> None:
        """No create will leave any more: uploads in progress are pointless, stop them."""
        if self.publisher is not None:
            self.publisher.halt()

    def within_cap(self) -> bool:
        """Whether one more create stays within --max-tasks (lost answers count as tasks)."""
        cap = self.options.max_tasks
        if cap is None:
            return True
        return self.used() < cap

    def used(self) -> int:
        """Creates that count against the cap now: made, possibly made, sent, holding a token."""
        return (
            self.outcome.tasks_created + self.outcome.possible_tasks + self.in_flight + self.holding
        )

    def record_failed_create(self, job: Job, attempt: int, exc: Exception) -> None:
        """Close the attempt of a create that got no task ID: rejected, or ambiguous."""
        if isinstance(exc, (NoAnswer, BadAnswer)):
            # The request may have reached the API: a task may exist that we will never see.
            self.outcome.possible_tasks += 1
            self.store.close_attempt(job.key, attempt, AttemptOutcome.AMBIGUOUS, describe(exc))
        elif isinstance(exc, (ApiError, NotSent)):
            # The API answered with an error, or nothing left this machine: no task exists.
            self.store.close_attempt(job.key, attempt, AttemptOutcome.REJECTED, describe(exc))
        # Anything else is a bug: the attempt stays open, so the next run treats it as lost.

    # -- waiting for a task ---------------------------------------------------------------------

    def polls_less(self, job: Job) -> bool:
        """Whether ``job``'s tasks are polled less often: the manifest chose a callback for
        them (not a model that requires one, which says nothing of wanting fewer queries)."""
        return self.manifest.callback_url is not None and not get_model(job.model).callback_required

    async def watch(self, task_id: str, *, age: float = 0.0, slower: bool = False) -> _Watched:
        """Poll a task until it ends, times out, or the run must leave it unfinished.

        ``age``: seconds the task has existed already (created by an earlier run); its timeout
        counts from its create, but it is queried once before it can time out (it may have
        finished while no run was watching). ``slower``: the first query waits
        CALLBACK_POLL_FACTOR times longer (see :meth:`polls_less`).
        """
        started = self.timer.now() - age
        delay = self.options.poll_interval * (CALLBACK_POLL_FACTOR if slower else 1.0)
        last_state: TaskState | None = None
        queried = False
        await self.pause(delay)
        while True:
            if self.halted:
                return _Watched(None, message="the run stopped")
            if queried and self.timer.now() - started > self.options.task_timeout:
                message = f"task unfinished after {self.options.task_timeout:g} s"
                self.store.update_task(task_id, TaskState.TIMEOUT, fail_msg=message)
                return _Watched(TaskState.TIMEOUT, message=message)
            try:
                info = await self.retrier.call(
                    self.query_policy,
                    lambda: self.client.query(task_id, before_send=self.gate),
                )
            except (Withdrawn, Halted):
                continue  # the check at the top of the loop leaves
            except AuthRejected:
                self.halt(StopReason.AUTH)
                continue
            except UnusableResult as exc:
                # A success we cannot use counts as a failed attempt, with the reason.
                self.store.update_task(task_id, TaskState.FAIL, fail_msg=str(exc))
                return _Watched(TaskState.FAIL, message=str(exc))
            except GaveUp as exc:
                if isinstance(exc.last, NotFound):
                    message = "the API no longer knows this task (404)"
                    self.store.update_task(task_id, TaskState.FAIL, fail_msg=message)
                    return _Watched(TaskState.FAIL, message=message, gone=True)
                reason = exc.reason or f"status queries keep failing: {describe(exc.last)}"
                return _Watched(None, message=reason)
            queried = True
            if info.state == TaskState.SUCCESS:
                self.store.update_task(task_id, TaskState.SUCCESS, result_urls=info.result_urls)
                return _Watched(TaskState.SUCCESS, info.result_urls)
            if info.state == TaskState.FAIL:
                message = info.fail_msg or "the task failed"
                if info.fail_code:
                    message = f"{message} (code {info.fail_code})"
                self.store.update_task(
                    task_id,
                    TaskState.FAIL,
                    fail_code=info.fail_code,
                    fail_msg=info.fail_msg or message,
                )
                failure = classify(info.fail_code, info.fail_msg, self.options.failure_rules)
                return _Watched(TaskState.FAIL, message=message, failure=failure)
            if (
                info.state == TaskState.UNKNOWN
                and info.raw_state not in self.outcome.unknown_states
            ):
                self.outcome.unknown_states.add(info.raw_state)
                self.events.warn(
                    f"the API reported an unknown task state {info.raw_state!r}; "
                    "treating it as still running"
                )
            if info.state != last_state:
                last_state = info.state
                self.store.update_task(task_id, info.state)
            delay = min(delay * POLL_GROWTH, max(MAX_POLL_DELAY, self.options.poll_interval))
            await self.pause(delay)

    # -- downloading the pictures ---------------------------------------------------------------

    def ledger(self) -> Ledger:
        """Which identity each output file belongs to (made when the first picture is fetched)."""
        if self._ledger is None:
            self._ledger = Ledger(self.options.output_dir.resolve(), self.manifest, self.store)
        return self._ledger

    async def fetch(
        self, job: Job, task_id: str | None, urls: Sequence[str], record: JobRecord | None
    ) -> None:
        """Put every output of a succeeded task in place, then record the job as succeeded.

        Each output goes under the job's name now. A copy of it already on disk (the job was
        renamed, or its picture had to make way for another job's) is moved there; otherwise it
        is downloaded. Another identity's picture under that name is first moved to a name of
        its own (:meth:`Ledger.make_room`): it is never overwritten.
        """
        if not self.options.decisions.download:
            self.store.record_files(job.key, [], [])
            self.events.job_finished(job, JobStatus.SUCCEEDED, None)
            return
        root = self.options.output_dir.resolve()
        ledger = self.ledger()
        # Recorded pictures are reused only when they are this task's, never for a new task.
        reuse = record is not None and task_id is not None and record.task_id == task_id
        kept: list[Picture] = []
        refreshed = False
        index = 0
        urls = list(urls)
        while index < len(urls):
            name = self.manifest.output_name(job, index + 1)
            dest = (root / name).resolve()
            if not dest.is_relative_to(root):
                self.finish(
                    job, JobStatus.FAILED, f"output name {name!r} would leave the output folder"
                )
                return
            relative = dest.relative_to(root).as_posix()
            own = ledger.own_copy(job, index, relative) if reuse else None
            if own is None or own.name != relative:
                conflict = ledger.make_room(job, relative)
                if conflict is not None:
                    self.leave(job, JobStatus.RUNNING, conflict)
                    return
            if own is not None:
                if own.name != relative:
                    ledger.move(job.key, own.name, relative)
                kept.append(Picture(relative, own.sha256, own.size))
                index += 1
                continue
            url = urls[index]
            try:
                done = await self.retrier.call(
                    self.download_policy,
                    lambda url=url, dest=dest: self.client.download(  # type: ignore[misc]
                        url, dest, max_bytes=self.options.max_download_bytes
                    ),
                )
            except Halted:
                self.events.job_finished(job, JobStatus.RUNNING, "the run stopped")
                return
            except UrlExpired as exc:
                fresh = None if refreshed or task_id is None else await self.fresh_urls(task_id)
                refreshed = True
                if fresh is None:
                    if self.halted:
                        self.events.job_finished(job, JobStatus.RUNNING, "the run stopped")
                    else:
                        self.finish(
                            job,
                            JobStatus.FAILED,
                            f"the result URL has expired ({exc})",
                            failure=FailureClass.TRANSIENT,
                        )
                    return
                urls = fresh
                continue
            except DownloadRejected as exc:
                self.finish(job, JobStatus.FAILED, str(exc))
                return
            except GaveUp as exc:
                reason = exc.reason or f"downloads keep failing: {describe(exc.last)}"
                self.leave(job, JobStatus.RUNNING, reason)
                return
            except OSError as exc:  # a full disk, a read-only folder: the next run downloads it
                self.leave(job, JobStatus.RUNNING, f"cannot save {name}: {os_reason(exc)}")
                return
            kept.append(Picture(relative, done.sha256, done.size))
            index += 1
        sizes = [picture.size for picture in kept if picture.size is not None]
        self.store.record_files(
            job.key,
            [picture.name for picture in kept],
            [picture.sha256 for picture in kept],
            sizes if len(sizes) == len(kept) else (),
        )
        ledger.recorded(job.key, kept)
        self.events.job_finished(job, JobStatus.SUCCEEDED, None)

    async def fresh_urls(self, task_id: str) -> list[str] | None:
        """One fresh status query for new result URLs after a URL expired."""
        try:
            info = await self.retrier.call(
                self.query_policy, lambda: self.client.query(task_id, before_send=self.gate)
            )
        except (Withdrawn, Halted, GaveUp, UnusableResult):
            return None
        except AuthRejected:
            self.halt(StopReason.AUTH)
            return None
        if info.state == TaskState.SUCCESS and info.result_urls:
            self.store.update_task(task_id, TaskState.SUCCESS, result_urls=info.result_urls)
            return list(info.result_urls)
        return None


def describe(exc: BaseException) -> str:
    """A failed request in a few words, for the state file and the results."""
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status} {exc.message}".strip()
    return str(exc) or type(exc).__name__
