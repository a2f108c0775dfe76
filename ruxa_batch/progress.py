"""What the user sees while a run goes on: a tqdm bar on a terminal, log lines otherwise."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TextIO

from ruxa_batch.engine import Events
from ruxa_batch.jobs import Job
from ruxa_batch.local_files import LocalFile
from ruxa_batch.statuses import FailureClass, JobStatus

LOG_INTERVAL = 10.0


class Progress(Events):
    """Counts job events and shows them as a bar (``bar``), log lines (``log``) or not (``off``)."""

    def __init__(
        self,
        *,
        total: int,
        mode: str,
        verbose: bool = False,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval: float = LOG_INTERVAL,
    ) -> None:
        self.total = total
        self.mode = mode
        self.verbose = verbose
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.started = time.monotonic()
        self.submitted = 0
        self.with_task: set[str] = set()  # jobs whose task is running or downloading
        self.succeeded = 0
        self.failed = 0
        self.left = 0
        self._bar: Any = None
        self._uploads_bar: Any = None
        self.uploads_total = 0
        self.uploads_size = 0
        self.uploads_done = 0
        self.uploads_failed = 0
        self._ticker: asyncio.Task[None] | None = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, unit="job", file=self.stream, dynamic_ncols=True, smoothing=0.1
            )

    def start(self) -> None:
        """Begin periodic log lines (log mode); call inside the event loop."""
        if self.mode == "log" and self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.line(self.status_line())

    def line(self, text: str) -> None:
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def status_line(self) -> str:
        """``[12s] 150/2,000 finished: 140 succeeded, 10 failed; 300 running``."""
        elapsed = time.monotonic() - self.started
        finished = self.succeeded + self.failed
        uploads = ""
        if self.uploads_total:
            uploads = f"; uploads {self.uploads_done:,}/{self.uploads_total:,}"
            if self.uploads_failed:
                uploads += f" ({self.uploads_failed:,} failed)"
        return (
            f"[{elapsed:.0f}s] {finished:,}/{self.total:,} finished: {self.succeeded:,} succeeded, "
            f"{self.failed:,} failed; {len(self.with_task):,} running, "
            f"{self.submitted:,} tasks created{uploads}"
        )

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(
                created=self.submitted,
                running=len(self.with_task),
                failed=self.failed,
                refresh=False,
            )

    def job_started(self, job: Job, *, has_task: bool) -> None:
        if has_task:
            self.with_task.add(job.key)

    def job_submitted(self, job: Job, task_id: str) -> None:
        self.submitted += 1
        self.with_task.add(job.key)
        if self.verbose:
            self.line(f"created {task_id} for {job.id} (variant {job.variant})")
        self._refresh()

    def job_finished(self, job: Job, status: JobStatus, message: str | None) -> None:
        self.with_task.discard(job.key)
        if status == JobStatus.SUCCEEDED:
            self.succeeded += 1
        elif status == JobStatus.FAILED:
            self.failed += 1
        else:
            self.left += 1
        if self.verbose or (status == JobStatus.FAILED and self.mode != "off"):
            detail = f": {message}" if message else ""
            self.line(f"{status}: {job.id} (variant {job.variant}){detail}")
        if self._bar is not None:
            self._bar.update(1)
            self._refresh()

    def task_failed(
        self, job: Job, task_id: str, message: str, failure: FailureClass, *, retry: bool
    ) -> None:
        if self.verbose:
            then = "a new task follows" if retry else "not retried"
            self.line(
                f"task {task_id} of {job.id} (variant {job.variant}) failed ({failure}): "
                f"{message}; {then}"
            )

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.line(f"warning: {message}")

    def uploads_planned(self, files: int, size: int) -> None:
        self.uploads_total += files
        self.uploads_size += size
        if self.mode == "bar":
            if self._uploads_bar is None:
                from tqdm import tqdm

                self._uploads_bar = tqdm(
                    total=0,
                    unit="file",
                    desc="publishing",
                    file=self.stream,
                    position=1,
                    leave=False,
                )
            self._uploads_bar.total = self.uploads_total
            self._uploads_bar.refresh()

    def upload_finished(self, file: LocalFile, *, sent: int, error: str | None) -> None:
        self.uploads_done += 1
        if error is not None:
            self.uploads_failed += 1
            if not self.quiet:  # the reason is the user's to act on (a credential, a path)
                self.line(f"upload failed: {error}")
        elif self.verbose:
            self.line(f"published {file.shown} ({sent:,} bytes sent)")
        if self._uploads_bar is not None:
            self._uploads_bar.update(1)

    def close(self) -> None:
        """Stop the ticker and the bar."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._uploads_bar is not None:
            self._uploads_bar.close()
            self._uploads_bar = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
