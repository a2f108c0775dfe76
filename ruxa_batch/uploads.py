"""Getting local pictures to URLs the API can fetch: the uploaders and what they promise.

An uploader publishes one file and returns its URL; the engine asks for each distinct file once,
before the first create that needs it, and records the URL in the state (keyed by the uploader's
``target`` and the file's sha256) so later runs reuse it until it would expire.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

import httpx

from ruxa_batch.addresses import is_loopback
from ruxa_batch.client import url_problem
from ruxa_batch.errors import UsageError, os_reason, scrub_secrets
from ruxa_batch.local_files import (
    DEFAULT_URL_LIFETIME,
    S3_EXTRA_MISSING,
    ChangedOnDisk,
    CommandSpec,
    LocalFile,
    S3Spec,
    UploadSpec,
)
from ruxa_batch.settings import API_KEY_ENV
from ruxa_batch.state import StateStore
from ruxa_batch.template import parse_template


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


# -- the uploaders that need nothing beyond the standard library and httpx -----------------------


def _fill(argv: Sequence[str], file: LocalFile) -> list[str]:
    values = {
        "path": str(file.path),
        "sha256": file.sha256,
        "ext": file.ext,
        "name": file.path.name,
    }
    return [parse_template(arg).render(values) for arg in argv]


# Output of an upload command kept for messages; the rest is read and dropped.
_OUTPUT_CAP = 64 * 1024


class CommandUploader:
    """Runs a command per file (no shell); the last line it prints is the file's URL."""

    def __init__(self, spec: CommandSpec, *, url_lifetime: float | None, folder: Path) -> None:
        self.spec = spec
        self.url_lifetime = url_lifetime
        self.folder = folder  # it runs there, as every path of a manifest is relative to it

    @property
    def target(self) -> str:
        return "command " + json.dumps(list(self.spec.argv))

    async def publish(self, file: LocalFile, *, now: float) -> Published:
        await read_unchanged(file)  # the command reads the file itself: it must be the planned one
        argv = _fill(self.spec.argv, file)
        # The tool gets the user's environment (its own credentials) but never the API key.
        env = {name: value for name, value in os.environ.items() if name != API_KEY_ENV}
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=self.folder,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise UploadFailed(
                f"{file.shown}: the upload command {argv[0]!r} was not found"
            ) from None
        except OSError as exc:
            raise UploadFailed(
                f"{file.shown}: the upload command {argv[0]!r} could not start: {os_reason(exc)}"
            ) from None
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.spec.timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise UploadFailed(
                f"{file.shown}: the upload command took more than {self.spec.timeout:g} s"
            ) from None
        if process.returncode != 0:
            said = _last_line(err[-_OUTPUT_CAP:])
            detail = f": {scrub_secrets(said)}" if said else ""
            raise UploadFailed(
                f"{file.shown}: the upload command exited with status {process.returncode}{detail}"
            )
        url = _last_line(out[-_OUTPUT_CAP:])
        if not url:
            raise UploadFailed(f"{file.shown}: the upload command printed no URL")
        problem = url_problem(url)
        if problem or any(ch.isspace() for ch in url):
            raise UploadFailed(
                f"{file.shown}: the upload command's last line is not an http(s) URL: "
                f"{scrub_secrets(url[:80])!r}"
            )
        expires = now + self.url_lifetime if self.url_lifetime is not None else None
        return Published(url, expires, file.size)

    async def aclose(self) -> None:
        return None


async def _same_content(headers: httpx.Headers, file: LocalFile) -> bool:
    """Whether a published copy's checksum, when its server gives one, is the local file's:
    S3's ``x-amz-checksum-sha256``, or an ETag that is an MD5 (S3 and others, for a file put
    in one part). A server that gives neither is trusted on the size alone."""
    checksum = headers.get("x-amz-checksum-sha256")
    if checksum:
        expected = base64.b64encode(bytes.fromhex(file.sha256)).decode()
        return bool(checksum.strip() == expected)
    etag = headers.get("etag", "").strip()
    if _MD5_ETAG.fullmatch(etag):
        data = await read_unchanged(file)
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return bool(digest == etag.strip('"').lower())
    return True


_MD5_ETAG = re.compile(r'"?[0-9A-Fa-f]{32}"?')


async def read_unchanged(file: LocalFile) -> bytes:
    """The file's bytes, if they are still the ones its jobs were planned with (read and
    re-hashed off the event loop); :class:`UploadFailed` if not."""
    try:
        return await asyncio.to_thread(file.read)
    except ChangedOnDisk as exc:
        raise UploadFailed(str(exc)) from None
    except OSError as exc:
        raise UploadFailed(f"cannot read {file.shown}: {os_reason(exc)}") from None


def _last_line(data: bytes) -> str:
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else ""


class HttpUploader:
    """The two uploaders that speak plain HTTP: files already published under a base URL
    (checked with a HEAD), and the sandbox's own upload route (a PUT, content-addressed)."""

    def __init__(self, base_url: str, *, api_key: str | None = None) -> None:
        self.base_url = base_url
        local = is_loopback(urlsplit(base_url).hostname)
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            headers={"User-Agent": "ruxa-batch"},
            timeout=httpx.Timeout(60.0, connect=15.0),
            follow_redirects=not api_key,  # a PUT with the key never follows one
            trust_env=not local,
        )

    @property
    def target(self) -> str:
        return ("sandbox at " if self._auth else "published at ") + self.base_url

    async def publish(self, file: LocalFile, *, now: float) -> Published:
        if self._auth:
            return await self._put(file)
        url = self.base_url + quote(file.shown)
        answer = await self._request("HEAD", url, file)
        if answer.status_code != 200:
            raise UploadFailed(
                f"{file.shown}: {url} answers HTTP {answer.status_code}; publish the folder "
                "there first (upload.base_url)"
            )
        length = answer.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) != file.size:
            raise UploadFailed(
                f"{file.shown}: {url} holds {int(length):,} bytes, the local file "
                f"{file.size:,}: the published copy is not this file"
            )
        if not await _same_content(answer.headers, file):
            raise UploadFailed(
                f"{file.shown}: the copy at {url} has other bytes than the local file (its "
                "checksum differs): publish the folder again"
            )
        return Published(url, None, 0)

    async def _put(self, file: LocalFile) -> Published:
        url = f"{self.base_url}uploads/{file.sha256}.{file.ext}"
        head = await self._request("HEAD", url, file)
        if head.status_code == 200:
            return Published(url, None, 0)
        try:
            data = await asyncio.to_thread(file.read)
        except (OSError, ChangedOnDisk) as exc:
            raise UploadFailed(
                str(exc) if isinstance(exc, ChangedOnDisk) else f"{file.shown}: {os_reason(exc)}"
            ) from None
        answer = await self._request("PUT", url, file, content=data)
        if answer.status_code not in (200, 201):
            raise UploadFailed(
                f"{file.shown}: the sandbox refused the upload (HTTP {answer.status_code})"
            )
        return Published(url, None, len(data))

    async def _request(
        self, method: str, url: str, file: LocalFile, *, content: bytes | None = None
    ) -> httpx.Response:
        try:
            return await self.client.request(
                method,
                url,
                content=content,
                headers={**self._auth, "Content-Type": file.media_type} if content else self._auth,
            )
        except httpx.HTTPError as exc:
            raise UploadFailed(
                f"{file.shown}: {method} {url} failed: {type(exc).__name__}"
            ) from None

    async def aclose(self) -> None:
        await self.client.aclose()


def url_lifetime(spec: UploadSpec | None) -> float | None:
    """How long the URLs of ``spec``'s uploader stay valid (None: they do not expire)."""
    if spec is not None and isinstance(spec.method, S3Spec):
        return spec.url_lifetime if spec.url_lifetime is not None else DEFAULT_URL_LIFETIME
    return spec.url_lifetime if spec is not None else None


def require_destination(spec: UploadSpec | None, *, sandbox: bool, base: Path) -> None:
    """Refuse, before anything is sent, a run whose local pictures have nowhere to go (no
    ``upload:`` section, the S3 extra missing, an upload command that is not there)."""
    if spec is None and not sandbox:
        raise UsageError(
            "the manifest sends local pictures but has no upload: section saying where they "
            'go (s3, command or base_url; see the README\'s "Local images"); --sandbox '
            "runs need none"
        )
    s3 = spec is not None and isinstance(spec.method, S3Spec)
    if s3 and importlib.util.find_spec("obstore") is None:
        raise UsageError(S3_EXTRA_MISSING)
    if spec is not None and isinstance(spec.method, CommandSpec):
        program = spec.method.argv[0]
        found = (
            os.access(base / program, os.X_OK) and (base / program).is_file()
            if "/" in program
            else shutil.which(program) is not None
        )
        if not found and "{" not in program:
            where = "in the manifest's folder" if "/" in program else "on the PATH"
            raise UsageError(
                f"the upload command {program!r} was not found {where} (or is not executable); "
                "a relative path in upload.command is relative to the manifest's folder"
            )


def destination_for(
    spec: UploadSpec | None,
    *,
    base: Path,
    sandbox_url: str | None = None,
    sandbox_key: str | None = None,
    republish: bool = False,
) -> Destination:
    """The destination of a run's local files: the manifest's ``upload:`` section, else the
    sandbox of a ``--sandbox`` run (:class:`UsageError` when there is neither). ``republish``:
    URLs recorded by earlier runs are not reused."""
    require_destination(spec, sandbox=sandbox_url is not None, base=base)
    reuse = not republish
    if spec is None:
        assert sandbox_url is not None
        uploader: Uploader = HttpUploader(sandbox_url, api_key=sandbox_key or "sandbox")
    elif isinstance(spec.method, S3Spec):
        from ruxa_batch.upload_s3 import make_s3_uploader

        lifetime = url_lifetime(spec)
        assert lifetime is not None
        uploader = make_s3_uploader(spec.method, url_lifetime=lifetime)
    elif isinstance(spec.method, CommandSpec):
        uploader = CommandUploader(spec.method, url_lifetime=spec.url_lifetime, folder=base)
    else:
        # Already published: the site may have changed since, so each run asks again.
        uploader, reuse = HttpUploader(spec.method.base_url), False
    return Destination(uploader, reuse_recorded=reuse)
