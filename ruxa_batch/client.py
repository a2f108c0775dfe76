"""The Ruxa API client: HTTP in, typed outcomes out. This is where a 429 gets handled.

Every answer is read twice: the HTTP status *and* the body's ``code`` (the API family sends
errors either way), and an answer that is not JSON at all (a proxy's HTML page) is its own error.
Creates and status queries pass through the shared :class:`~ruxa_batch.ratelimit.RateLimiter`;
every request holds one slot of the connection pool, so only ``concurrency`` are open at once.

The API key lives only in the client's headers: no error message, log line or exception built
here contains it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ruxa_batch.addresses import is_loopback
from ruxa_batch.ratelimit import Abandoned, RateLimiter
from ruxa_batch.statuses import TaskState

LANE_SIZE = 4
# The most a JSON answer of the API may weigh, decoded: real answers are a few hundred bytes.
MAX_ANSWER_BYTES = 1024 * 1024
# A whole answer (not each read) must arrive within this; a result file within the second.
ANSWER_DEADLINE = 120.0
DOWNLOAD_DEADLINE = 600.0
# Redirects a result file may go through (CDNs and object stores answer 302 to a signed URL).
MAX_REDIRECTS = 5
# What a task ID may look like (the API's are like task_gemini-2.5-flash-image_1766304530229_cf4d):
# checked before one is stored or put in a URL path.
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,255}")
CREATE_PATH = "/api/v1/tasks/create"
QUERY_PATH = "/api/v1/tasks/query/"
# The API's words for a task's state, as documented (both spellings of success).
API_STATES: Mapping[str, TaskState] = {
    "waiting": TaskState.WAITING,
    "queuing": TaskState.QUEUING,
    "generating": TaskState.GENERATING,
    "success": TaskState.SUCCESS,
    "completed": TaskState.SUCCESS,
    "fail": TaskState.FAIL,
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


class ApiError(Exception):
    """The API answered, with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class AuthRejected(ApiError):
    """401: the key is missing or invalid."""


class CreditsExhausted(ApiError):
    """402: not enough credits."""


class NotFound(ApiError):
    """404: no such task (or endpoint)."""


class InvalidRequest(ApiError):
    """422: the request's parameters are invalid; repeating it cannot help."""


class RateLimited(ApiError):
    """429: too many requests."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(status, message)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx (or an unknown error code): the server failed."""


class BadAnswer(Exception):
    """The answer is not the JSON the API documents (e.g. a proxy's HTML error page)."""


class NotSent(Exception):
    """The request never left: connecting failed. Always safe to repeat."""


class NoAnswer(Exception):
    """The request may have reached the server, but no answer came (timeout, dropped connection)."""


class Withdrawn(Exception):
    """Raised by a ``before_send`` hook: the request must not be sent after all."""


class UnusableResult(Exception):
    """A task reported success but its results cannot be used (no URL, a malformed one...)."""


class DownloadRejected(Exception):
    """A result file that is not acceptable (too big, not a PNG or JPEG, not http(s))."""


class UrlExpired(Exception):
    """A result URL answered 403 or 404: it has expired."""


@dataclass(frozen=True)
class TaskInfo:
    """A task's status as the query endpoint reports it."""

    task_id: str
    state: TaskState  # UNKNOWN for a state the docs do not list (raw_state has it)
    raw_state: str
    result_urls: tuple[str, ...]
    fail_code: str | None
    fail_msg: str | None


@dataclass(frozen=True)
class Downloaded:
    """A result file written to disk."""

    path: Path
    size: int
    sha256: str


_ERRORS: dict[int, type[ApiError]] = {
    401: AuthRejected,
    402: CreditsExhausted,
    404: NotFound,
    422: InvalidRequest,
}


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare for APIs; fall back to our own backoff


def _raise_for(status: int, message: str, headers: Mapping[str, str]) -> None:
    if status == 429:
        raise RateLimited(status, message, _retry_after(headers.get("retry-after")))
    error = _ERRORS.get(status)
    if error is not None:
        raise error(status, message)
    raise ServerError(status, message)


# The query of a URL the API quotes back (an input it could not read): a presigned URL's
# signature and access key ID are there, and would be kept in results and reports.
_URL_QUERY = re.compile(r"(?i)\b(https?://[^\s?#\"'<>()]*)\?[^\s#\"'<>()\]]*")


def _short(text: str, width: int = 200) -> str:
    """What the API said, on one line, at most ``width`` characters, URL queries hidden."""
    flat = _URL_QUERY.sub(r"\1?[query hidden]", " ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 3] + "..."


class RuxaClient:
    """Talks to one Ruxa API endpoint."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        concurrency: int,
        limiter: RateLimiter,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        answer_deadline: float = ANSWER_DEADLINE,
        download_deadline: float = DOWNLOAD_DEADLINE,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.answer_deadline = answer_deadline
        self.download_deadline = download_deadline
        self.max_answer_bytes = max_answer_bytes
        self.limiter = limiter
        self.requests = 0
        # Sent on API calls only: result URLs point at a CDN that must never see the key.
        self._auth = {"Authorization": f"Bearer {api_key}"}
        # httpcore looks at every connection of its pool on every request, so one pool of 32
        # costs several times the CPU of eight pools of 4. The connections are split into
        # lanes of at most LANE_SIZE; a request takes a free lane, so at most `concurrency`
        # requests are open at once, over at most `concurrency` connections.
        local = is_loopback(urlsplit(self.base_url).hostname)
        sizes = [LANE_SIZE] * (concurrency // LANE_SIZE)
        if concurrency % LANE_SIZE:
            sizes.append(concurrency % LANE_SIZE)
        self._lanes = [
            httpx.AsyncClient(
                headers={"User-Agent": "ruxa-batch"},
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=None),
                # API calls never follow a redirect (the key would go with it); result files
                # do, up to MAX_REDIRECTS hops, http(s) only (httpx refuses other schemes).
                follow_redirects=False,
                max_redirects=MAX_REDIRECTS,
                # HTTPS_PROXY, NO_PROXY and SSL_CERT_FILE apply, as for any httpx program
                # (a corporate proxy, its certificates); traffic to a loopback API (the sandbox)
                # never goes through a proxy.
                trust_env=not local,
            )
            for size in sizes
        ]
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for lane, size in enumerate(sizes):
            for _ in range(size):
                self._free.put_nowait(lane)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[httpx.AsyncClient]:
        """One of the `concurrency` request slots, with the connection pool it belongs to."""
        lane = await self._free.get()
        try:
            yield self._lanes[lane]
        finally:
            self._free.put_nowait(lane)

    async def aclose(self) -> None:
        """Close every connection."""
        for lane in self._lanes:
            await lane.aclose()

    async def __aenter__(self) -> RuxaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _api(
        self,
        method: str,
        path: str,
        body: Any = None,
        before_send: Callable[[], None] | None = None,
        abandon: Callable[[], bool] | None = None,
        granted: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        try:
            await self.limiter.acquire(abandon, granted)
        except Abandoned:
            raise Withdrawn from None
        async with self._slot() as http:
            # The last moment before the request leaves: the hook may withdraw it, and the
            # engine commits its write-ahead record here, not while the request still waits.
            if before_send is not None:
                before_send()
            self.requests += 1
            peer = f"the API at {self.base_url}"
            with _transport_errors(peer):
                async with deadline(self.answer_deadline, f"no complete answer from {peer}"):
                    request = http.build_request(
                        method, self.base_url + path, json=body, headers=self._auth
                    )
                    response = await http.send(request, stream=True)
                    try:
                        raw = await _read_capped(response, self.max_answer_bytes)
                    finally:
                        await response.aclose()
        return self._document(response, raw)

    def _document(self, response: httpx.Response, raw: bytes) -> dict[str, Any]:
        """The API's JSON envelope of an answer, or the error it stands for."""
        status = response.status_code
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
            # A 4xx is definitive whoever sent it; a 5xx page that is not the API's JSON comes
            # from something in between (a proxy), which may have passed the request on.
            if 400 <= status < 500:
                _raise_for(status, f"HTTP {status}", response.headers)
            kind = response.headers.get("content-type", "unknown").split(";")[0]
            sample = _short(raw[:200].decode("utf-8", "replace"), 80)
            raise BadAnswer(f"HTTP {status} answer is not JSON ({kind}): {sample}") from None
        if not isinstance(document, dict):
            raise BadAnswer(f"HTTP {status} answer is not a JSON object")
        code = document.get("code")
        message = _short(str(document.get("message") or document.get("msg") or ""))
        if status >= 500 and not isinstance(code, int):
            # Not the API's own envelope (an API gateway's timeout, a load balancer): whether
            # the request reached the API is unknown.
            raise BadAnswer(f"HTTP {status} from something in front of the API: {message}".strip())
        if status >= 400:
            _raise_for(status, message or f"HTTP {status}", response.headers)
        if isinstance(code, int) and code != 200:
            # An error sent as HTTP 200 with the code in the body: same meaning as the status.
            _raise_for(code, message or f"code {code}", response.headers)
        self.limiter.on_success()
        return document

    async def create(
        self,
        body: Mapping[str, Any],
        *,
        before_send: Callable[[], None] | None = None,
        abandon: Callable[[], bool] | None = None,
        granted: Callable[[], None] | None = None,
    ) -> str:
        """Create a task; returns its ID. ``before_send`` runs just before the request leaves;
        while it waits for its turn, ``abandon()`` turning true withdraws it; ``granted`` runs
        when it gets its rate-limit token."""
        try:
            document = await self._api("POST", CREATE_PATH, body, before_send, abandon, granted)
        except RateLimited as exc:
            self.limiter.on_rate_limited(exc.retry_after)
            raise
        data = document.get("data")
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise BadAnswer("the create answer has no data.taskId")
        if not TASK_ID.fullmatch(task_id):
            raise BadAnswer(
                f"the create answer's task ID is not valid: {_short(repr(task_id), 60)}"
            )
        return task_id

    async def query(
        self, task_id: str, *, before_send: Callable[[], None] | None = None
    ) -> TaskInfo:
        """A task's current status. ``before_send`` runs just before the request leaves."""
        try:
            path = QUERY_PATH + quote(task_id, safe="")
            document = await self._api("GET", path, None, before_send)
        except RateLimited as exc:
            self.limiter.on_rate_limited(exc.retry_after)
            raise
        data = document.get("data")
        if not isinstance(data, dict):
            raise BadAnswer("the query answer has no data object")
        return parse_task(task_id, data)

    async def download(self, url: str, dest: Path, *, max_bytes: int) -> Downloaded:
        """Stream ``url`` to ``dest`` through a temporary file; only PNG or JPEG is accepted."""
        target = checked_result_url(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{os.getpid()}.part")  # see PARTIAL_NAME
        async with self._slot() as http:
            self.requests += 1
            try:
                with _transport_errors("a result file"):
                    async with (
                        deadline(self.download_deadline, "the result file did not arrive in time"),
                        http.stream("GET", target, follow_redirects=True) as response,
                    ):
                        size, digest = await _save(response, partial, max_bytes)
                os.replace(partial, dest)
            except httpx.TooManyRedirects:
                raise DownloadRejected(
                    f"result URL redirects more than {MAX_REDIRECTS} times"
                ) from None
            except httpx.UnsupportedProtocol:
                raise DownloadRejected(
                    "result URL redirects to an address that is not http(s)"
                ) from None
            finally:
                if partial.exists():
                    partial.unlink()
        return Downloaded(dest, size, digest)


@asynccontextmanager
async def deadline(seconds: float, message: str) -> AsyncIterator[None]:
    """Raise :class:`NoAnswer` when the block takes longer than ``seconds`` in all (httpx's
    timeouts are per read: an answer that trickles in never trips them)."""
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(seconds):
                yield
        else:  # pragma: no cover - Python 3.10
            task = asyncio.current_task()
            assert task is not None
            handle = asyncio.get_running_loop().call_later(seconds, task.cancel)
            try:
                yield
            except asyncio.CancelledError:
                if handle.when() <= asyncio.get_running_loop().time():
                    raise TimeoutError from None
                raise
            finally:
                handle.cancel()
    except TimeoutError:
        raise NoAnswer(f"{message} within {seconds:g} s") from None


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """The decoded body of an API answer, refused past ``limit`` bytes."""
    declared = response.headers.get("content-length", "")
    if (
        declared.isdigit()
        and int(declared) > limit
        and not response.headers.get("content-encoding")
    ):
        raise BadAnswer(f"the answer is {int(declared):,} bytes, over the {limit:,}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise BadAnswer(f"the answer is over the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


# Space, the C0 controls and DEL (a regex: checked for every result URL of every job).
_BLANK_OR_CONTROL = re.compile("[\x00-\x20\x7f]")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a result file's address (None: it can)."""
    if not url.lower().startswith(("http://", "https://")):
        return "it is not http(s)"
    if _BLANK_OR_CONTROL.search(url):
        return "it contains white space or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
        host = parts.hostname
        parsed = httpx.URL(url)
        _ = parsed.host, parsed.port  # the host's IDNA form is decoded (and checked) lazily
    except (ValueError, httpx.InvalidURL):
        return "it is malformed"
    if not host:
        return "it has no host"
    if port == 0:
        return "it has port 0"
    return None


def checked_result_url(url: str) -> str:
    """``url`` if a result file may be fetched from it, else :class:`DownloadRejected`."""
    problem = url_problem(url)
    if problem:
        raise DownloadRejected(f"result URL {_short(repr(url), 80)} is unusable: {problem}")
    return url


# The temporary name of a download in progress (``download`` above): a killed run leaves these.
PARTIAL_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})\.part")


def remove_stale_partials(folder: Path) -> int:
    """Delete the temporary files that downloads of killed runs left in ``folder`` and below;
    only names :meth:`RuxaClient.download` makes, of processes that are gone. Returns how many."""
    removed = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            match = PARTIAL_NAME.fullmatch(name)
            if match is None or _alive(int(match["pid"])):
                continue
            try:
                Path(root, name).unlink()
            except OSError:
                continue
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (another run may still be writing its file)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # pragma: no cover - os.kill(pid, 0) is not a probe on Windows
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # it exists, under another user
    except (OSError, OverflowError):
        return False
    return True


async def _save(response: httpx.Response, partial: Path, max_bytes: int) -> tuple[int, str]:
    """Write a result file's body to ``partial``, checked; returns its size and sha256."""
    if response.status_code in (403, 404, 410):
        raise UrlExpired(f"HTTP {response.status_code}")
    if response.status_code != 200:
        raise ServerError(response.status_code, "download failed")
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise DownloadRejected(
            f"result file is {int(declared):,} bytes, over the {max_bytes:,}-byte limit"
        )
    digest = hashlib.sha256()
    size = 0
    head = b""
    with partial.open("wb") as handle:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise DownloadRejected(f"result file is over the {max_bytes:,}-byte limit")
            if len(head) < 8:
                head += chunk[: 8 - len(head)]
            digest.update(chunk)
            handle.write(chunk)
    # Not synced to disk: every run checks each recorded picture's size and sha256 before
    # counting it done, so one a power cut truncated is downloaded again, never taken as good.
    if not (head.startswith(PNG_MAGIC) or head.startswith(JPEG_MAGIC)):
        raise DownloadRejected("result file is neither a PNG nor a JPEG")
    return size, digest.hexdigest()


@contextmanager
def _transport_errors(peer: str) -> Iterator[None]:
    """Turn httpx's network errors into NotSent (nothing left) or NoAnswer (it may have)."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise NotSent(f"could not connect to {peer}: {type(exc).__name__}") from None
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise NoAnswer(f"no answer from {peer}: {type(exc).__name__}") from None
    except httpx.DecodingError:
        raise BadAnswer(
            f"the answer from {peer} is damaged (its encoding does not decode)"
        ) from None


def parse_task(task_id: str, data: Mapping[str, Any]) -> TaskInfo:
    """Read a query answer's ``data``; every field beyond taskId, state, resultJson is optional.

    A task that reports success must come with usable result URLs, else
    :class:`UnusableResult` says why.
    """
    raw_state = str(data.get("state") or "")
    normalised = API_STATES.get(raw_state.lower(), TaskState.UNKNOWN)
    urls: tuple[str, ...] = ()
    if normalised == TaskState.SUCCESS:
        urls = _result_urls(data.get("resultJson"))
    fail_code = data.get("failCode")
    fail_msg = data.get("failMsg")
    return TaskInfo(
        task_id=task_id,
        state=normalised,
        raw_state=_short(raw_state, 40),
        result_urls=urls,
        fail_code=None if fail_code in (None, "") else _short(str(fail_code), 40),
        fail_msg=None if fail_msg in (None, "") else _short(str(fail_msg)),
    )


def _result_urls(result_json: Any) -> tuple[str, ...]:
    """The result URLs of a succeeded task's ``resultJson`` (a JSON document in a string)."""
    parsed: Any = result_json
    if isinstance(result_json, str):
        try:
            parsed = json.loads(result_json)
        except (ValueError, RecursionError):
            raise UnusableResult(
                "the task succeeded but its resultJson is not valid JSON"
            ) from None
    found = parsed.get("resultUrls") if isinstance(parsed, dict) else None
    if not isinstance(found, list):
        raise UnusableResult("the task succeeded but its resultJson has no resultUrls list")
    if not found:
        raise UnusableResult("the task succeeded but its resultJson lists no resultUrls")
    for url in found:
        if not isinstance(url, str):
            raise UnusableResult("the task succeeded but a result URL is not a string")
        problem = url_problem(url)
        if problem:
            raise UnusableResult(
                f"the task succeeded but result URL {_short(repr(url), 80)} is unusable: {problem}"
            )
    return tuple(found)
