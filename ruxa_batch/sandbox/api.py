"""The Ruxa API's behaviour without the HTTP plumbing: requests in, replies out.

Everything here follows ``ruxa-api.md``; the faults of :class:`SandboxConfig` are applied here too.
Beyond the documented API it serves ``/uploads/<sha256>.<ext>`` (a content-addressed place to
publish local pictures, :mod:`ruxa_batch.sandbox.blobs`), and like the real service it reads a
create's input pictures, those on this machine only (:mod:`ruxa_batch.sandbox.inputs`): a task
whose input cannot be read ends in ``fail``, and a result is drawn from its input
(:mod:`ruxa_batch.sandbox.derive`).

All state sits behind one lock. A task's state is computed from the time elapsed since its
create, so no thread runs per task; only callbacks need a (single) scheduler thread.

With a :class:`~ruxa_batch.sandbox.store.SandboxStore`, tasks and counters outlive the process:
each task is stored before its create is answered, the counters with it and, between creates,
at most every :data:`SAVE_EVERY` seconds and when the sandbox closes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ruxa_batch.addresses import is_loopback
from ruxa_batch.local_files import sniff
from ruxa_batch.sandbox import derive, images
from ruxa_batch.sandbox.blobs import MAX_BLOB_BYTES, MEDIA_TYPES, BlobStore, parse_name
from ruxa_batch.sandbox.callbacks import Scheduler, is_loopback_url, post_json
from ruxa_batch.sandbox.config import SandboxConfig
from ruxa_batch.sandbox.inputs import InputCheck, Unreadable, check_inputs, input_urls
from ruxa_batch.sandbox.pngread import SIGNATURE, Picture
from ruxa_batch.sandbox.rules import (
    CONTENT_TYPES,
    IMAGE_SIZES,
    CreateRequest,
    check_create,
)
from ruxa_batch.sandbox.store import SandboxStore
from ruxa_batch.sandbox.tasks import Task

CREATE_PATH = "/api/v1/tasks/create"
QUERY_PREFIX = "/api/v1/tasks/query/"
FILES_PREFIX = "/files/"
UPLOADS_PREFIX = "/uploads/"

# Seconds between saves of the counters when no create saves them; a killed sandbox loses at most
# this long's counts of other requests (a create's own counts are saved with its task).
SAVE_EVERY = 1.0

COUNTERS = (
    "creates",  # tasks created (dropped answers included)
    "creates_rejected",  # create requests answered with an error, no task made
    "duplicate_creates",  # creates whose model+input equal an earlier create's
    "queries",  # query requests received
    "downloads",  # result files served
    "unauthorized",  # 401s
    "payment_required",  # 402s
    "not_found",  # 404s, API and files
    "invalid",  # 422s
    "rate_limited",  # 429s
    "server_errors",  # 500s
    "garbage",  # non-JSON answers
    "dropped",  # creates whose connection was closed unanswered
    "callbacks_sent",
    "callbacks_skipped",  # callback URL not on loopback: nothing sent
    "callbacks_failed",  # loopback receiver unreachable or too slow
    "uploads",  # pictures uploaded that the sandbox did not have yet
    "uploads_rejected",  # uploads refused: wrong hash, not a picture, too large, bad name
    "inputs_read",  # input pictures read (from this machine) at create
    "inputs_unreadable",  # tasks failed because an input picture could not be read
)

# Draws for the failure reason of a task that ends in `fail`; failCode is a string, as in the
# related APIs that document it.
FAIL_REASONS = (
    ("500", "Image generation failed, please try again"),
    ("400", "The prompt or image was flagged by the content safety filter"),
    ("422", "An input image could not be downloaded"),
)

GARBAGE_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


# --- replies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One HTTP answer."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def to_json(document: object) -> bytes:
    """JSON as the documented examples print it: ``", "`` and ``": "`` separators."""
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def _ok(data: object) -> Reply:
    return Reply(200, to_json({"code": 200, "message": "success", "data": data}))


# --- rate limit ---------------------------------------------------------------------------------


class _Bucket:
    """A token bucket that holds one second's worth of requests (at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.last = time.monotonic()

    def take(self, now: float) -> float:
        """0 when a request may pass, else the seconds until it could."""
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Sandbox:
    """The server's state and behaviour; :mod:`ruxa_batch.sandbox.server` puts HTTP around it."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        api_key: str,
        base_url: str,
        store: SandboxStore | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._api_key = api_key
        self.base_url = base_url
        self._rng = random.Random(config.seed)
        self._bucket = _Bucket(config.rate_limit) if config.rate_limit else None
        self._tasks: dict[str, Task] = {}
        self._hashes: set[str] = set()
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._store = store
        folder = store.path.parent if store is not None else None
        # Pictures uploaded to /uploads/, and the inputs the sandbox read from elsewhere on
        # this machine: results are drawn from them again after a restart.
        self._uploads = BlobStore(folder / "uploads" if folder else None)
        self._inputs = BlobStore(folder / "inputs" if folder else None)
        self._decoded = derive.DecodedInputs()
        self._closed = False
        self._scheduler = Scheduler(self._fire_callback)
        if store is not None:
            self._restore(store)
        self._saved = dict(self._counters)
        self._saved_at = time.monotonic()
        self._scheduler.start()

    def _restore(self, store: SandboxStore) -> None:
        """Take over the stored tasks and counters; callbacks still due are scheduled again."""
        now = time.monotonic()
        for task in store.tasks():
            self._tasks[task.task_id] = task
            self._hashes.add(task.body_hash)
            # A task that ended while no sandbox ran sends no callback (polling finds it).
            if task.callback_url and task.ends > now:
                self._scheduler.add(task.ends, task.task_id)
        saved = store.counters()
        self._counters.update({name: saved[name] for name in COUNTERS if name in saved})

    @property
    def config(self) -> SandboxConfig:
        """The configuration in force."""
        return self._config

    @property
    def api_key(self) -> str:
        """The key the API accepts."""
        return self._api_key

    def reconfigure(self, config: SandboxConfig) -> None:
        """Switch to ``config``; a new seed restarts the random draws, a new rate a full bucket."""
        with self._lock:
            old, self._config = self._config, config
            if config.seed != old.seed:
                self._rng = random.Random(config.seed)
            if config.rate_limit != old.rate_limit:
                self._bucket = _Bucket(config.rate_limit) if config.rate_limit else None
            if config.api_key is not None:
                self._api_key = config.api_key

    def close(self) -> None:
        """Stop the callback thread; save the counters and close the store, if any."""
        self._scheduler.stop()
        with self._lock:
            self._closed = True
            if self._store is not None:
                self._store.save_counters(self._counters)
                self._store.close()
                self._store = None

    def counters(self) -> dict[str, int]:
        """A snapshot of the counters."""
        with self._lock:
            return dict(self._counters)

    def tasks(self) -> list[dict[str, Any]]:
        """Every task so far, oldest first, as plain data."""
        now = time.monotonic()
        with self._lock:
            return [
                {
                    "taskId": task.task_id,
                    "state": self._reported_state(task, now),
                    "request": {key: task.request[key] for key in ("model", "input")},
                    "createTime": task.create_ms,
                    "bodyHash": task.body_hash,
                    "callbackUrl": task.callback_url,
                    # The sha256 of the first input as the sandbox read it (None: not read).
                    "inputSha256": task.input_sha256,
                }
                for task in self._tasks.values()
            ]

    # --- endpoints (called by the HTTP layer; ``None`` means: close without answering) ---

    def create(self, authorization: str | None, body: bytes | None) -> Reply | None:
        """``POST /api/v1/tasks/create``; ``body`` is ``None`` when it was too large to read.

        Input pictures on this machine are read between the gate and the new task, without the
        lock: a slow input server holds up this create only, never the other requests.
        """
        with self._lock:
            if self._closed:  # a request that outlived the server: no task, no answer
                return None
            denied = self._gate(authorization)
            if denied:
                self._counters["creates_rejected"] += 1
                self._autosave()
                return denied
        checked = check_create(body) if body is not None else ["request body: too large"]
        inputs = self._read_inputs(checked) if isinstance(checked, CreateRequest) else None
        with self._lock:
            if self._stopped():  # it stopped while the inputs were read
                return None
            reply = self._new_task(checked, inputs)
            if isinstance(reply, Task):
                task = reply
                if self._rng.random() < self._config.drop_rate:
                    self._counters["dropped"] += 1
                    self._autosave()
                    return None
                return _ok({"taskId": task.task_id})
            self._counters["creates_rejected"] += 1
            self._autosave()
            return reply

    def query(self, authorization: str | None, task_id: str) -> Reply:
        """``GET /api/v1/tasks/query/{taskId}``."""
        with self._lock:
            self._counters["queries"] += 1
            denied = self._gate(authorization)
            if denied:
                return denied
            self._autosave()
            task = self._tasks.get(task_id)
            if task is None:
                return self._error(404, f"task not found: {task_id}")
            return _ok(self._task_object(task, time.monotonic()))

    def _read_inputs(self, checked: CreateRequest) -> InputCheck:
        """Read the create's input pictures that are on this machine; keep the first by content."""
        found = check_inputs(input_urls(checked.request.get("input")), own=self._own_upload)
        first = found.first
        if first is not None and first.ext == "png":
            name = f"{first.sha256}.{first.ext}"
            if self._uploads.size(name) is None:
                # Not kept: the result then falls back to the drawing in the input's frame.
                with contextlib.suppress(OSError):
                    self._inputs.put(name, first.data)
        return found

    def _own_upload(self, url: str) -> bytes | None:
        """The bytes behind a URL of this sandbox's ``/uploads/`` route, read from the store;
        ``None`` for any other URL. A missing upload is what a GET would say: HTTP 404."""
        try:
            parts, base = urlsplit(url), urlsplit(self.base_url)
            port, own_port = parts.port or 80, base.port or 80
        except ValueError:
            return None
        same_host = parts.netloc == base.netloc or (
            is_loopback(parts.hostname) and port == own_port
        )
        path = unquote(parts.path)
        if parts.scheme != "http" or not same_host or not path.startswith(UPLOADS_PREFIX):
            return None
        data = self._uploads.get(path[len(UPLOADS_PREFIX) :])
        if data is None:
            raise Unreadable("HTTP 404")
        return data

    # --- uploads: content-addressed pictures the API can fetch, as from any public URL ---

    def put_upload(self, authorization: str | None, name: str, body: bytes | None) -> Reply:
        """``PUT /uploads/<sha256>.<ext>``; ``body`` is ``None`` when it was too large to read."""
        with self._lock:
            if not self._has_key(authorization):
                self._counters["unauthorized"] += 1
                # Always a real 401: errors_in_body is a trait of the API, not of this route.
                return Reply(401, to_json({"code": 401, "message": "missing or invalid API key"}))
        parsed = parse_name(name)
        if parsed is None:
            return self._upload_error(404, f"not an upload name: {name} (<sha256>.png|jpg|webp)")
        sha256, ext = parsed
        if body is None or len(body) > MAX_BLOB_BYTES:
            limit = MAX_BLOB_BYTES // (1024 * 1024)
            return self._upload_error(413, f"upload larger than {limit} MB")
        actual = hashlib.sha256(body).hexdigest()
        if actual != sha256:
            return self._upload_error(400, f"the body's sha256 is {actual}, not the name's")
        media = sniff(body[:12])
        if media is None:
            return self._upload_error(415, "not a PNG, JPEG or WebP image")
        if media != MEDIA_TYPES[ext]:
            return self._upload_error(415, f"the bytes are {media}, not .{ext}")
        try:
            new = self._uploads.put(name, body)
        except OSError as exc:
            message = f"cannot store the upload: {exc.strerror or exc}"
            with self._lock:
                self._counters["server_errors"] += 1
            return Reply(500, to_json({"code": 500, "message": message}))
        with self._lock:
            if new:
                self._counters["uploads"] += 1
            self._autosave()
        return Reply(
            201 if new else 200, to_json({"url": f"{self.base_url}{UPLOADS_PREFIX}{name}"})
        )

    def get_upload(self, name: str) -> Reply:
        """``GET``/``HEAD /uploads/<name>``: the picture, no key needed (the API fetches it like
        any public URL). For ``HEAD`` the body is left to the HTTP layer to drop; its length is
        the picture's."""
        parsed = parse_name(name)
        data = self._uploads.get(name) if parsed is not None else None
        if parsed is None or data is None:
            with self._lock:
                self._counters["not_found"] += 1
                return Reply(404, to_json({"code": 404, "message": "upload not found"}))
        return Reply(200, data, MEDIA_TYPES[parsed[1]])

    def _upload_error(self, status: int, message: str) -> Reply:
        with self._lock:
            self._counters["uploads_rejected"] += 1
            self._autosave()
        return Reply(status, to_json({"code": status, "message": message}))

    def download(self, name: str) -> Reply:
        """``GET /files/{taskId}/{n}.{ext}``: the image, generated on request."""
        task_id, _, file_name = name.partition("/")
        now = time.monotonic()
        with self._lock:
            self._autosave()
            task = self._tasks.get(task_id)
            ttl = self._config.url_ttl
            if (
                task is None
                or file_name != task.file_name
                or task.state(now) != "success"
                or (ttl is not None and now > task.ends + ttl)
            ):
                self._counters["not_found"] += 1
                return Reply(404, to_json({"code": 404, "message": "file not found"}))
            self._counters["downloads"] += 1
        fmt = task.output.output_format
        rows = derive.result_rows(
            task.task_id, width=task.width, height=task.height, source=self._source(task)
        )
        data = images.encode(task.task_id, rows, width=task.width, height=task.height, fmt=fmt)
        return Reply(200, data, CONTENT_TYPES[fmt])

    def _source(self, task: Task) -> tuple[str, Picture | None] | None:
        """What ``task``'s result is drawn from: its first input picture, when that was read."""
        sha256, ext = task.input_sha256, task.input_ext
        if sha256 is None:
            return None
        if ext != "png":
            return sha256, None
        name = f"{sha256}.{ext}"
        return sha256, self._decoded.get(
            sha256, lambda: self._uploads.get(name) or self._inputs.get(name)
        )

    def not_found(self, *, api: bool) -> Reply:
        """Any other path: API paths answer like the API, others like a plain web server."""
        with self._lock:
            self._autosave()
            if api:
                return self._error(404, "endpoint not found")
            self._counters["not_found"] += 1
            return Reply(404, to_json({"code": 404, "message": "not found"}))

    # --- internals, called with the lock held ---

    def _stopped(self) -> bool:
        return self._closed

    def _autosave(self) -> None:
        """Save changed counters when the last save is :data:`SAVE_EVERY` seconds old."""
        if self._store is None:
            return
        now = time.monotonic()
        if now - self._saved_at >= SAVE_EVERY and self._counters != self._saved:
            self._store.save_counters(self._counters)
            self._saved, self._saved_at = dict(self._counters), now

    def _error(self, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        counter = {
            401: "unauthorized",
            402: "payment_required",
            404: "not_found",
            422: "invalid",
            429: "rate_limited",
            500: "server_errors",
        }[code]
        self._counters[counter] += 1
        status = 200 if self._config.errors_in_body else code
        return Reply(status, to_json({"code": code, "message": message}), headers=headers)

    def _has_key(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries the key: API routes and uploads alike."""
        expected = f"Bearer {self._api_key}".encode()
        return hmac.compare_digest((authorization or "").encode(), expected)

    def _gate(self, authorization: str | None) -> Reply | None:
        """What every create and query passes first: key, rate limit, random 500s and garbage."""
        if not self._has_key(authorization):
            return self._error(401, "missing or invalid API key")
        if self._bucket:
            wait = self._bucket.take(time.monotonic())
            if wait:
                retry_after = str(max(1, math.ceil(wait)))
                return self._error(429, "rate limited", (("Retry-After", retry_after),))
        # Both draws happen on every request so that one fault's rate never shifts the other's.
        error_draw, garbage_draw = self._rng.random(), self._rng.random()
        if error_draw < self._config.error_rate:
            return self._error(500, "internal server error")
        if garbage_draw < self._config.garbage_rate:
            self._counters["garbage"] += 1
            # A proxy's error page: HTTP 200 too when the API itself hides errors that way.
            status = 200 if self._config.errors_in_body else 502
            return Reply(status, GARBAGE_PAGE, "text/html")
        return None

    def _new_task(
        self, checked: CreateRequest | list[str], inputs: InputCheck | None
    ) -> Task | Reply:
        if isinstance(checked, list):
            return self._error(422, "; ".join(checked))
        config = self._config
        if config.credits is not None and self._counters["creates"] >= config.credits:
            return self._error(402, "insufficient credits")

        # Fixed draws per task keep a seeded scenario repeatable.
        fail_draw, reason = self._rng.random(), self._rng.choice(FAIL_REASONS)
        if config.fail_code is not None:  # drawn all the same, so a seeded scenario repeats
            reason = next(kind for kind in FAIL_REASONS if kind[0] == config.fail_code)
        fail = reason if fail_draw < config.fail_rate else None
        first = inputs.first if inputs is not None else None
        if inputs is not None and inputs.fail is not None:
            fail = inputs.fail  # the real service fails a task whose picture it cannot read
        now_ms = int(time.time() * 1000)
        while True:
            task_id = f"task_{checked.model.engine}_{now_ms}_{self._rng.getrandbits(32):08x}"
            if task_id not in self._tasks:
                break
        aspect = checked.output.aspect
        size = _png_size(first.data) if first is not None else None
        if aspect == "auto" and size is not None:
            aspect = f"{size[0]}:{size[1]}"  # the model follows the input picture
        if aspect == "auto":  # an input that was not read, or not a PNG: any ratio
            ratios = [size for size in IMAGE_SIZES if size != "auto"]
            aspect = ratios[hashlib.sha256(task_id.encode()).digest()[0] % len(ratios)]
        long_side = config.image_size * checked.output.scale  # 2k, 4k: 2 and 4 times 1k's
        width, height = images.dimensions(aspect, long_side=long_side)
        body_hash = checked.fingerprint()
        task = Task(
            task_id=task_id,
            request=checked.request,
            body_hash=body_hash,
            output=checked.output,
            width=width,
            height=height,
            created=time.monotonic(),
            create_ms=now_ms,
            duration=config.generation_time,
            fail=fail,
            callback_url=checked.callback_url,
            input_sha256=first.sha256 if first is not None else None,
            input_ext=first.ext if first is not None else None,
        )
        counters = dict(self._counters)
        counters["creates"] += 1
        if inputs is not None:
            counters["inputs_read"] += inputs.read
            counters["inputs_unreadable"] += 1 if inputs.fail is not None else 0
        if body_hash in self._hashes:
            counters["duplicate_creates"] += 1
        if self._store is not None:
            # On disk before the answer leaves; if this raises, no task exists and none is told.
            self._store.add_task(task, counters)
            self._saved, self._saved_at = dict(counters), time.monotonic()
        self._counters = counters
        self._tasks[task_id] = task
        self._hashes.add(body_hash)
        if task.callback_url:
            self._scheduler.add(task.ends, task_id)
        return task

    def _reported_state(self, task: Task, now: float) -> str:
        state = task.state(now)
        if state == "success" and self._config.completed_state:
            return "completed"
        return state

    def _task_object(self, task: Task, now: float) -> dict[str, Any]:
        """The ``data`` of a query answer: the documented keys first, in the documented order."""
        state = self._reported_state(task, now)
        result_json = ""
        if state in ("success", "completed"):
            url = f"{self.base_url}{FILES_PREFIX}{task.task_id}/{task.file_name}"
            result_json = json.dumps({"resultUrls": [url]}, separators=(",", ":"))
        data: dict[str, Any] = {"taskId": task.task_id, "state": state, "resultJson": result_json}
        if task.fail and state == "fail":
            if not self._config.minimal_fields:
                data["failCode"] = task.fail[0]
            data["failMsg"] = task.fail[1]
        if self._config.minimal_fields:
            return data
        finished = state in ("success", "completed", "fail")
        if finished:
            data["costTime"] = round(task.duration * 1000)
        data["createTime"] = task.create_ms
        if finished:
            data["completeTime"] = task.create_ms + round(task.duration * 1000)
        data["param"] = json.dumps(task.request, separators=(",", ":"), ensure_ascii=False)
        return data

    def _fire_callback(self, task_id: str) -> None:
        with self._lock:
            task = self._tasks[task_id]
            url = task.callback_url or ""
            if not is_loopback_url(url):
                # This machine must never send traffic elsewhere; the client cannot tell.
                self._counters["callbacks_skipped"] += 1
                return
            body = _ok(self._task_object(task, time.monotonic())).body  # as a query answers
        try:
            post_json(url, body)
            outcome = "callbacks_sent"
        except OSError:
            outcome = "callbacks_failed"
        with self._lock:
            self._counters[outcome] += 1
            self._autosave()


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's header, when both are positive."""
    if not data.startswith(SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return (width, height) if width > 0 and height > 0 else None
