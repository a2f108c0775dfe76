"""Getting local pictures to URLs the API can fetch: what an uploader promises, and the
publisher that asks it.

An uploader publishes one file and returns its URL; the engine asks the :class:`Publisher` for
each distinct file once, before the first create that needs it, and the publisher records the URL
in the state (keyed by the uploader's ``target`` and the file's sha256) so later runs reuse it
until it would expire. The uploaders themselves are in :mod:`ruxa_batch.uploaders` and
:mod:`ruxa_batch.upload_s3`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ruxa_batch.errors import os_reason
from ruxa_batch.local_files import (
    DEFAULT_URL_LIFETIME,
    ChangedOnDisk,
    LocalFile,
    S3Spec,
    UploadSpec,
)
from ruxa_batch.state import StateStore


@dataclass(frozen=True)
class Published:
    """Where a file can be fetched, and until when."""

    url: str
    expires_at: float | None  # wall-clock seconds since the epoch; None: it does not expire
    sent_bytes: int  # bytes sent this time: 0 when the destination already had the file


class UploadFailed(Exception):
    """Publishing one file failed: a one-line reason, naming neither a credential nor a secret.

    It costs only the jobs that need that file (they stay pending); never the batch.
    """


class UploadStopped(Exception):
    """The run halted (Ctrl-C) while a file was being published: its jobs wait for the next run."""


class Uploader(Protocol):
    """Publishes local files somewhere the API can fetch them."""

    @property
    def target(self) -> str:
        """Where files go (``s3://bucket/prefix``...): a URL recorded for one target is never
        reused for another."""
        ...

    async def publish(self, file: LocalFile, *, now: float) -> Published:
        """Make ``file`` fetchable and return its URL; ``now`` is the wall clock, for expiry.

        Raises :class:`UploadFailed` for this file only.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and processes."""
        ...


@dataclass(frozen=True)
class Destination:
    """An uploader and whether a URL it gave an earlier run may be reused without asking it."""

    uploader: Uploader
    reuse_recorded: bool = True  # False: it is asked again each run (a HEAD per file)


class UploadEvents(Protocol):
    """What the progress display hears of uploads."""

    def uploads_planned(self, files: int, size: int) -> None:
        """``files`` more files of ``size`` bytes in all are to be published in this run."""

    def upload_finished(self, file: LocalFile, *, sent: int, error: str | None) -> None:
        """One file is published (``sent`` bytes went out), or failed with ``error``."""


class Publisher:
    """Publishes each distinct local file of a run once, concurrently, before the first create
    that needs it, and records where in the state (keyed by the uploader's target and sha256).

    A URL recorded by an earlier run is reused while it stays valid for ``margin`` seconds more
    (the time a create and its task may take to start; see :func:`renewal_margin`); otherwise
    it is renewed (re-signed or uploaded again) before the create leaves. A file that cannot be
    published costs only the jobs that send it: they ask, get :class:`UploadFailed`, and stay
    pending.
    """

    def __init__(
        self,
        destination: Destination,
        store: StateStore,
        *,
        concurrency: int,
        margin: float,
        clock: Callable[[], float] = time.time,
        events: UploadEvents | None = None,
    ) -> None:
        self.uploader = destination.uploader
        self.reuse = destination.reuse_recorded
        self.store = store
        self.margin = margin
        self.clock = clock
        self.events = events
        self.sent_bytes = 0
        self.published = 0
        self.failed = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._recorded = store.uploads(self.uploader.target)
        self.stopped = False  # the run halted: publishes in progress are cancelled
        self._running: dict[str, asyncio.Task[str]] = {}  # sha256 -> URL, being published
        self._done: dict[str, tuple[str, float | None]] = {}  # sha256 -> URL, expiry
        self._expiry: dict[str, float | None] = {}  # every URL handed out -> its expiry

    def fresh(self, expires_at: float | None) -> bool:
        """Whether a URL expiring at ``expires_at`` may still be handed to a create."""
        return expires_at is None or expires_at - self.clock() >= self.margin

    def needed(self, files: Iterable[LocalFile]) -> list[LocalFile]:
        """Those of ``files`` this run must publish (no valid URL recorded), without repeats."""
        out: dict[str, LocalFile] = {}
        for file in files:
            record = self._recorded.get(file.sha256) if self.reuse else None
            if record is None or not self.fresh(record.expires_at):
                out.setdefault(file.sha256, file)
        return list(out.values())

    def start(self, files: Iterable[LocalFile]) -> None:
        """Begin publishing, in the order given, every file of ``files`` that needs it (call
        inside the event loop); jobs then wait only for their own files."""
        for file in self.needed(files):
            self._begin(file)

    def _begin(self, file: LocalFile) -> asyncio.Task[str]:
        task = self._running.get(file.sha256)
        if task is None or (task.done() and not task.cancelled() and task.exception() is None):
            if self.events is not None:  # the start's files, then renewals and late ones
                self.events.uploads_planned(1, file.size)
            task = asyncio.get_running_loop().create_task(self._publish(file))
            self._running[file.sha256] = task
        return task

    async def _publish(self, file: LocalFile) -> str:
        async with self._slots:
            try:
                published = await self.uploader.publish(file, now=self.clock())
            except UploadFailed as exc:
                self.failed += 1
                if self.events is not None:
                    self.events.upload_finished(file, sent=0, error=str(exc))
                raise
        self.store.record_upload(
            self.uploader.target,
            file.sha256,
            url=published.url,
            expires_at=published.expires_at,
            size=file.size,
            sent_bytes=published.sent_bytes,
        )
        self.sent_bytes += published.sent_bytes
        self.published += 1
        self._done[file.sha256] = (published.url, published.expires_at)
        if self.events is not None:
            self.events.upload_finished(file, sent=published.sent_bytes, error=None)
        return published.url

    def halt(self) -> None:
        """Stop publishing (the run halts): uploads in progress are cancelled (an upload
        command's process group is killed) and jobs waiting for them hear
        :class:`UploadStopped`. Nothing is lost: a file is recorded only once published."""
        self.stopped = True
        for task in self._running.values():
            task.cancel()

    def halted(self) -> bool:
        """Whether :meth:`halt` was called."""
        return self.stopped

    async def url(self, file: LocalFile) -> str:
        """A URL of ``file`` valid for ``margin`` seconds more; :class:`UploadFailed` if not,
        :class:`UploadStopped` if the run halts first."""
        done = self._done.get(file.sha256)
        if done is not None and self.fresh(done[1]):
            self._expiry[done[0]] = done[1]
            return done[0]
        record = self._recorded.get(file.sha256) if self.reuse else None
        if done is None and record is not None and self.fresh(record.expires_at):
            self._expiry[record.url] = record.expires_at
            return record.url
        if self.halted():
            raise UploadStopped
        task = self._running.get(file.sha256)
        if task is None or (task.done() and not task.cancelled() and task.exception() is None):
            # Never started (a job the start did not foresee) or its URL went stale: renew.
            task = self._begin(file)
        # A failed publish is not repeated in this run: every job of the file hears why.
        try:
            url = await asyncio.shield(task)
        except asyncio.CancelledError:
            if self.halted() and task.cancelled():
                raise UploadStopped from None
            raise
        self._expiry[url] = self._done[file.sha256][1]
        return url

    def still_good(self, urls: Mapping[str, str]) -> bool:
        """Whether the URLs a create carries (by sha256) may still leave with it: checked at
        the last moment, since a create may wait long for its rate-limit token."""
        return all(self.fresh(self._expiry.get(url)) for url in urls.values())

    async def urls_for(self, files: Sequence[LocalFile]) -> dict[str, str]:
        """The URLs of ``files`` by sha256, once each is published."""
        urls: dict[str, str] = {}
        for file in files:
            if file.sha256 not in urls:
                urls[file.sha256] = await self.url(file)
        return urls

    async def aclose(self) -> None:
        """Cancel publishes still running (a halted run) and close the uploader."""
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        await self.uploader.aclose()


def renewal_margin(*, task_timeout: float, url_lifetime: float | None) -> float:
    """How long a URL must stay valid to be handed to a create: the task may wait for a
    rate-limit token and then in the API's queue (a task not started within ``task_timeout``
    is given up anyway), but never more than half a URL's lifetime, so that a fresh URL is
    always good enough."""
    margin = task_timeout + CREATE_SLACK
    if url_lifetime is not None:
        margin = min(margin, url_lifetime / 2)
    return margin


# Seconds a create may wait for its rate-limit token and connection after its URLs are taken.
CREATE_SLACK = 600.0


async def read_unchanged(file: LocalFile) -> bytes:
    """The file's bytes, if they are still the ones its jobs were planned with (read and
    re-hashed off the event loop); :class:`UploadFailed` if not."""
    try:
        return await asyncio.to_thread(file.read)
    except ChangedOnDisk as exc:
        raise UploadFailed(str(exc)) from None
    except OSError as exc:
        raise UploadFailed(f"cannot read {file.shown}: {os_reason(exc)}") from None


def url_lifetime(spec: UploadSpec | None) -> float | None:
    """How long the URLs of ``spec``'s uploader stay valid (None: they do not expire)."""
    if spec is not None and isinstance(spec.method, S3Spec):
        return spec.url_lifetime if spec.url_lifetime is not None else DEFAULT_URL_LIFETIME
    return spec.url_lifetime if spec is not None else None
