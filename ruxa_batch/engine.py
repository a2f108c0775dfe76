"""The run engine: drives every job from "pending" to "succeeded" (or "failed"), crash-safely.

Each job is one coroutine that walks the job's life: create a task (write-ahead, see
:mod:`ruxa_batch.state`), poll it with per-task backoff, download its pictures, record them.
Every step's outcome is committed to the state file before the next step starts, so killing the
process at any instant loses nothing: the next run reads the state and continues.

Tasks in flight are not connections in flight: thousands of tasks may be running on the server,
while the client keeps only ``concurrency`` requests open and shares one rate limit.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
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
    UrlExpired,
    Withdrawn,
)
from ruxa_batch.jobs import Job, Manifest
from ruxa_batch.state import (
    AMBIGUOUS,
    FAILED,
    PENDING,
    REJECTED,
    SUCCEEDED,
    UNCERTAIN,
    JobRecord,
    StateStore,
)

# How many times in a row one request may fail on the network or with a 5xx before the job is
# left for a later run, and the longest pause between tries.
TRANSIENT_TRIES = 6
MAX_BACKOFF = 30.0
MAX_POLL_DELAY = 30.0
POLL_GROWTH = 1.5
CALLBACK_POLL_FACTOR = 4.0


@dataclass(frozen=True)
class EngineOptions:
    """What the engine needs to know beyond the manifest."""

    output_dir: Path
    poll_interval: float
    max_attempts: int
    task_timeout: float
    retry_failed: bool
    at_most_once: bool
    retry_uncertain: bool
    download: bool
    max_download_bytes: int
    backoff_base: float = 1.0
    seed: int | None = None
    max_tasks: int | None = None  # hard cap on creates in this run


@dataclass
class RunOutcome:
    """What happened during one run."""

    tasks_created: int = 0
    possible_tasks: int = 0  # creates whose answer was lost: each may have made a task
    stopped_by: str | None = None  # "credits" | "auth" | "interrupted" | "max_tasks"
    not_submitted: int = 0
    unknown_states: set[str] = field(default_factory=set)


class Events:
    """Hooks for progress display; the default does nothing."""

    def job_started(self, job: Job, *, has_task: bool) -> None:
        """This run starts driving ``job`` (``has_task``: an earlier run created its task)."""

    def job_submitted(self, job: Job, task_id: str) -> None:
        """A task was created for ``job``."""

    def job_finished(self, job: Job, status: str, message: str | None) -> None:
        """``job`` reached a status this run will not change (or was left for a later run)."""

    def warn(self, message: str) -> None:
        """Something the user should know about."""


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manifest = manifest
        self.store = store
        self.client = client
        self.options = options
        self.events = events or Events()
        self.clock = clock
        self.outcome = RunOutcome()
        self.stop_creating = False  # 402: no more creates, but finish what is running
        self.halted = False  # 401 or Ctrl-C: no more requests of any kind
        self.in_flight = 0  # creates sent and not answered yet
        self._sleepers: set[asyncio.Future[None]] = set()
        self.rng = random.Random(options.seed)
        self.callback = manifest.callback_url is not None

    # -- the run ---------------------------------------------------------------------------

    def recover(self, records: dict[str, JobRecord]) -> bool:
        """Settle creates that a previous run sent but never saw answered (ambiguous).

        Returns whether any was found.
        """
        found = False
        for job in self.manifest.jobs:
            record = records.get(job.key)
            if record is None or record.open_attempt is None:
                continue
            found = True
            self.store.close_attempt(
                job.key,
                record.open_attempt,
                AMBIGUOUS,
                "a run stopped before the API answered this create",
            )
            if self.options.at_most_once and not self.options.retry_uncertain:
                self.store.set_status(
                    job.key,
                    UNCERTAIN,
                    error="a create may have reached the API but its answer was lost; "
                    "rerun with --retry-uncertain to submit it again",
                    possible_duplicate=True,
                )
            else:
                self.store.set_status(job.key, PENDING, possible_duplicate=True)
        return found

    def initial_work(self, records: dict[str, JobRecord]) -> list[tuple[Job, JobRecord | None]]:
        """Decide, from the state alone, which jobs this run has to drive."""
        work: list[tuple[Job, JobRecord | None]] = []
        for job in self.manifest.jobs:
            record = records.get(job.key)
            if record is None or record.status in (PENDING, "running"):
                work.append((job, record))
            elif record.status == SUCCEEDED:
                if self.options.download and not self.files_present(record):
                    work.append((job, record))
            elif record.status == FAILED and self.options.retry_failed:
                self.store.set_status(job.key, PENDING, reset_attempts=True)
                work.append((job, None))
            elif record.status == UNCERTAIN and self.options.retry_uncertain:
                self.store.set_status(job.key, PENDING, possible_duplicate=True)
                work.append((job, None))
        return work

    def files_present(self, record: JobRecord) -> bool:
        """Whether a succeeded job's pictures are still on disk."""
        if not record.files:
            return not self.options.download
        return all((self.options.output_dir / name).is_file() for name in record.files)

    async def run(self) -> RunOutcome:
        """Drive every job that needs it; returns when all are done or the run must stop."""
        records = self.store.job_records()
        # Only new or renamed jobs are written: a resumed 20,000-job batch writes nothing here.
        changed = [
            (job.key, job.id, job.variant, json.dumps(self.body(job), sort_keys=True))
            for job in self.manifest.jobs
            if job.key not in records
            or (records[job.key].id, records[job.key].variant) != (job.id, job.variant)
        ]
        if changed:
            self.store.ensure_jobs(changed)
        if self.recover(records) or changed:
            records = self.store.job_records()
        work = self.initial_work(records)
        tasks = [asyncio.ensure_future(self.drive(job, record)) for job, record in work]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return self.outcome

    def body(self, job: Job) -> dict[str, object]:
        """The create request body for ``job`` (the same bytes every time)."""
        body: dict[str, object] = {
            "model": self.manifest.model,
            "input": self.manifest.request_input(job),
        }
        if self.manifest.callback_url:
            body["callback_url"] = self.manifest.callback_url
        return body

    def halt(self, reason: str) -> None:
        """Stop sending requests (401 or Ctrl-C): requests in flight finish and are recorded,
        waiting jobs wake up and leave, and no job changes status because of the stop."""
        if self.halted:
            return
        self.halted = True
        self.stop_creating = True
        self.outcome.stopped_by = reason
        self.client.limiter.open()
        for sleeper in list(self._sleepers):
            if not sleeper.done():
                sleeper.set_result(None)

    def gate(self) -> None:
        """``before_send`` hook of status queries: nothing leaves once the run halts."""
        if self.halted:
            raise Withdrawn

    async def pause(self, seconds: float) -> None:
        """Sleep, unless the run halts first."""
        if self.halted:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        handle = asyncio.get_running_loop().call_later(seconds, wake)
        self._sleepers.add(future)
        try:
            await future
        finally:
            handle.cancel()
            self._sleepers.discard(future)

    async def drive(self, job: Job, record: JobRecord | None) -> None:
        """One job's whole life in this run."""
        attempts = record.attempts if record is not None else 0
        task_id = record.task_id if record is not None and record.status != PENDING else None
        self.events.job_started(job, has_task=task_id is not None)
        if record is not None and record.status == SUCCEEDED:
            await self.fetch(job, task_id, list(record.result_urls))
            return
        if task_id is not None:
            # A task from an earlier run: if it is already known to have succeeded, go straight
            # to the download; otherwise keep watching it.
            recorded, recorded_urls = self.store.task_state(task_id)
            if recorded == "success" and recorded_urls:
                await self.fetch(job, task_id, list(recorded_urls))
                return
            if recorded in ("fail", "timeout"):
                task_id = None
        while True:
            if task_id is None:
                if attempts >= self.options.max_attempts:
                    self.finish(job, FAILED, f"gave up after {attempts} tasks")
                    return
                task_id = await self.submit(job)
                if task_id is None:
                    return
                attempts += 1
                self.events.job_submitted(job, task_id)
            state, urls, message = await self.watch(job, task_id)
            if state == "success":
                await self.fetch(job, task_id, urls)
                return
            if state == "unfinished":
                self.events.job_finished(job, "running", message)
                return
            # The task failed or timed out: a new attempt, if any is left.
            if attempts >= self.options.max_attempts:
                self.finish(job, FAILED, message)
                return
            task_id = None

    def finish(self, job: Job, status: str, message: str | None) -> None:
        """Record a final status for this run and report it."""
        self.store.set_status(job.key, status, error=message)
        self.events.job_finished(job, status, message)

    async def backoff(self, failures: int, retry_after: float | None = None) -> None:
        """Exponential backoff with full jitter, honouring Retry-After."""
        if retry_after is not None:
            await self.pause(retry_after)
            return
        ceiling = min(MAX_BACKOFF, self.options.backoff_base * 2 ** (failures - 1))
        await self.pause(self.rng.uniform(ceiling / 2, ceiling))

    # -- creating a task (the paid step) -------------------------------------------------------

    async def submit(self, job: Job) -> str | None:
        """Create a task for ``job``; None when the job leaves this run without one."""
        failures = 0
        while True:
            if self.stop_creating:
                if not self.halted:
                    self.outcome.not_submitted += 1
                self.store.set_status(job.key, PENDING)
                self.events.job_finished(job, PENDING, "not submitted")
                return None
            numbers: list[int] = []

            def intend(numbers: list[int] = numbers) -> None:
                # Every create passes here, at the last moment before it leaves: the cap is
                # checked and the write-ahead record committed (a create still waiting for a
                # token or a connection is neither counted nor ambiguous if we die).
                if not self.stop_creating and not self.within_cap():
                    self.stop_creating = True
                    self.outcome.stopped_by = self.outcome.stopped_by or "max_tasks"
                if self.stop_creating:
                    raise Withdrawn
                numbers.append(self.store.begin_attempt(job.key))
                self.in_flight += 1

            try:
                task_id = await self.client.create(self.body(job), before_send=intend)
            except Withdrawn:
                continue  # the top of the loop leaves the job pending
            except Exception as exc:
                if not numbers:
                    raise  # failed before the request could leave: a bug, not an API answer
                self.in_flight -= 1
                outcome = self.create_failed(job, numbers[0], exc)
                if outcome == "stop":
                    return None
                if outcome == "transient":
                    failures += 1
                    if failures >= TRANSIENT_TRIES:
                        self.leave(job, PENDING, _describe(exc))
                        return None
                    await self.backoff(failures)
                elif isinstance(exc, RateLimited):
                    await self.backoff(1, exc.retry_after)
                continue
            self.in_flight -= 1
            self.store.record_task(job.key, numbers[0], task_id)
            self.outcome.tasks_created += 1
            return task_id

    def within_cap(self) -> bool:
        """Whether one more create stays within --max-tasks (lost answers count as tasks)."""
        cap = self.options.max_tasks
        if cap is None:
            return True
        used = self.outcome.tasks_created + self.outcome.possible_tasks + self.in_flight
        return used < cap

    def create_failed(self, job: Job, attempt: int, exc: Exception) -> str:
        """Record why a create got no task ID; returns "stop", "transient" or "again"."""
        if isinstance(exc, RateLimited):
            self.store.close_attempt(job.key, attempt, REJECTED, "429 rate limited")
            return "again"
        if isinstance(exc, CreditsExhausted):
            self.store.close_attempt(job.key, attempt, REJECTED, f"402 {exc.message}")
            if not self.stop_creating:
                self.events.warn(f"the API reports insufficient credits (402): {exc.message}")
            self.stop_creating = True
            self.outcome.stopped_by = self.outcome.stopped_by or "credits"
            return "again"
        if isinstance(exc, AuthRejected):
            self.store.close_attempt(job.key, attempt, REJECTED, f"401 {exc.message}")
            self.halt("auth")
            return "again"
        if isinstance(exc, InvalidRequest):
            self.store.close_attempt(job.key, attempt, REJECTED, f"422 {exc.message}")
            self.finish(job, FAILED, f"the API rejected the request (422): {exc.message}")
            return "stop"
        if isinstance(exc, NotFound):
            self.store.close_attempt(job.key, attempt, REJECTED, f"404 {exc.message}")
            self.finish(job, FAILED, f"the create endpoint was not found (404): {exc.message}")
            return "stop"
        if isinstance(exc, (NotSent, ServerError)):
            # Nothing left this machine, or the API itself answered that it failed: no task
            # was made, so repeating is safe.
            self.store.close_attempt(job.key, attempt, REJECTED, _describe(exc))
            return "transient"
        if isinstance(exc, (NoAnswer, BadAnswer, ApiError)):
            # The request may have reached the API: a task may exist that we will never see.
            reason = _describe(exc)
            self.outcome.possible_tasks += 1
            self.store.close_attempt(job.key, attempt, AMBIGUOUS, reason)
            if self.options.at_most_once:
                self.finish(
                    job,
                    UNCERTAIN,
                    f"the create may have reached the API but no answer came ({reason}); "
                    "rerun with --retry-uncertain to submit it again",
                )
                return "stop"
            return "transient"
        raise exc

    def leave(self, job: Job, status: str, reason: str) -> None:
        """Leave a job for a later run after repeated network or server errors."""
        self.store.set_status(job.key, status, error=f"left for a later run: {reason}")
        self.events.job_finished(job, status, reason)

    # -- waiting for a task ---------------------------------------------------------------------

    async def watch(self, job: Job, task_id: str) -> tuple[str, list[str], str]:
        """Poll a task until it ends; returns (success|fail|timeout|unfinished, urls, message)."""
        started = self.clock()
        delay = self.options.poll_interval * (CALLBACK_POLL_FACTOR if self.callback else 1.0)
        failures = 0
        not_found = 0
        last_state = None
        await self.pause(delay)
        while True:
            if self.halted:
                return ("unfinished", [], "the run stopped")
            if self.clock() - started > self.options.task_timeout:
                message = f"task unfinished after {self.options.task_timeout:g} s"
                self.store.update_task(task_id, "timeout", fail_msg=message)
                return ("timeout", [], message)
            try:
                info = await self.client.query(task_id, before_send=self.gate)
            except Withdrawn:
                continue  # the check at the top of the loop leaves
            except RateLimited as exc:
                await self.backoff(1, exc.retry_after)
                continue
            except AuthRejected:
                self.halt("auth")
                continue
            except NotFound:
                not_found += 1
                if not_found >= 3:
                    message = "the API no longer knows this task (404)"
                    self.store.update_task(task_id, "fail", fail_msg=message)
                    return ("fail", [], message)
                await self.backoff(not_found)
                continue
            except (NotSent, NoAnswer, ServerError, BadAnswer, ApiError) as exc:
                failures += 1
                if failures >= TRANSIENT_TRIES:
                    return ("unfinished", [], f"status queries keep failing: {_describe(exc)}")
                await self.backoff(failures)
                continue
            failures = 0
            if info.state == "success":
                self.store.update_task(task_id, "success", result_urls=info.result_urls)
                return ("success", list(info.result_urls), "")
            if info.state == "fail":
                message = info.fail_msg or "the task failed"
                if info.fail_code:
                    message = f"{message} (code {info.fail_code})"
                self.store.update_task(
                    task_id, "fail", fail_code=info.fail_code, fail_msg=info.fail_msg or message
                )
                return ("fail", [], message)
            if (
                info.state.startswith("unknown:")
                and info.raw_state not in self.outcome.unknown_states
            ):
                self.outcome.unknown_states.add(info.raw_state)
                self.events.warn(
                    f"the API reported an unknown task state {info.raw_state!r}; "
                    "treating it as still running"
                )
            if info.raw_state != last_state:
                last_state = info.raw_state
                self.store.update_task(task_id, info.raw_state or "unknown")
            delay = min(delay * POLL_GROWTH, max(MAX_POLL_DELAY, self.options.poll_interval))
            await self.pause(delay)

    # -- downloading the pictures ---------------------------------------------------------------

    async def fetch(self, job: Job, task_id: str | None, urls: list[str]) -> None:
        """Download every output of a succeeded task, then record the job as succeeded."""
        if not self.options.download:
            self.store.record_files(job.key, [], [])
            self.events.job_finished(job, SUCCEEDED, None)
            return
        root = self.options.output_dir.resolve()
        names: list[str] = []
        digests: list[str] = []
        refreshed = False
        index = 0
        failures = 0
        while index < len(urls):
            if self.halted:
                self.events.job_finished(job, "running", "the run stopped")
                return
            name = self.manifest.output_name(job, index + 1)
            dest = (root / name).resolve()
            if not dest.is_relative_to(root):
                self.finish(job, FAILED, f"output name {name!r} would leave the output folder")
                return
            try:
                done = await self.client.download(
                    urls[index], dest, max_bytes=self.options.max_download_bytes
                )
            except UrlExpired as exc:
                if refreshed or task_id is None:
                    self.finish(job, FAILED, f"the result URL has expired ({exc})")
                    return
                refreshed = True
                fresh = await self.fresh_urls(task_id)
                if fresh is None and not self.halted:
                    self.finish(job, FAILED, f"the result URL has expired ({exc})")
                    return
                urls = fresh or urls  # when halted, the check at the top of the loop leaves
                continue
            except DownloadRejected as exc:
                self.finish(job, FAILED, str(exc))
                return
            except (NotSent, NoAnswer, ServerError) as exc:
                failures += 1
                if failures >= TRANSIENT_TRIES:
                    self.leave(job, "running", f"downloads keep failing: {_describe(exc)}")
                    return
                await self.backoff(failures)
                continue
            names.append(dest.relative_to(root).as_posix())
            digests.append(done.sha256)
            index += 1
        self.store.record_files(job.key, names, digests)
        self.events.job_finished(job, SUCCEEDED, None)

    async def fresh_urls(self, task_id: str) -> list[str] | None:
        """One fresh status query for new result URLs after a URL expired."""
        for failures in range(1, TRANSIENT_TRIES + 1):
            if self.halted:
                return None
            try:
                info = await self.client.query(task_id, before_send=self.gate)
            except Withdrawn:
                return None
            except RateLimited as exc:
                await self.backoff(1, exc.retry_after)
                continue
            except AuthRejected:
                self.halt("auth")
                return None
            except (NotFound, ApiError, NotSent, NoAnswer, BadAnswer):
                await self.backoff(failures)
                continue
            if info.state == "success" and info.result_urls:
                self.store.update_task(task_id, "success", result_urls=info.result_urls)
                return list(info.result_urls)
            return None
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status} {exc.message}".strip()
    return str(exc) or type(exc).__name__
