"""The uploaders: an upload command, files already published under a base URL, and the sandbox's
own upload route; and which one a run uses (:func:`destination_for`). The S3 uploader is in
:mod:`ruxa_batch.upload_s3`, behind the optional ``s3`` extra.
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
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from ruxa_batch.addresses import is_loopback
from ruxa_batch.client import url_problem
from ruxa_batch.errors import UsageError, os_reason, scrub_secrets
from ruxa_batch.local_files import (
    S3_EXTRA_MISSING,
    CommandSpec,
    LocalFile,
    S3Spec,
    UploadSpec,
)
from ruxa_batch.settings import API_KEY_ENV
from ruxa_batch.template import parse_template
from ruxa_batch.uploads import (
    Destination,
    Published,
    Uploader,
    UploadFailed,
    read_unchanged,
    url_lifetime,
)


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
        data = await read_unchanged(file)
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
