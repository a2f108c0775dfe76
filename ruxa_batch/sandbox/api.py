"""The Ruxa API's behaviour without the HTTP plumbing: requests in, replies out.

Everything here follows ``ruxa-api.md``; the faults of :class:`SandboxConfig` are applied here too.
All state sits behind one lock. A task's state is computed from the time elapsed since its
create, so no thread runs per task; only callbacks need a (single) scheduler thread.

With a :class:`~ruxa_batch.sandbox.store.SandboxStore`, tasks and counters outlive the process:
each task is stored before its create is answered, the counters with it and, between creates,
at most every :data:`SAVE_EVERY` seconds and when the sandbox closes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from ruxa_batch.sandbox import images
from ruxa_batch.sandbox.callbacks import Scheduler, is_loopback_url, post_json
from ruxa_batch.sandbox.config import SandboxConfig
from ruxa_batch.sandbox.rules import CONTENT_TYPES, IMAGE_SIZES, check_create
from ruxa_batch.sandbox.store import SandboxStore
from ruxa_batch.sandbox.tasks import Task

CREATE_PATH = "/api/v1/tasks/create"
QUERY_PREFIX = "/api/v1/tasks/query/"
FILES_PREFIX = "/files/"

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
                }
                for task in self._tasks.values()
            ]

    # --- endpoints (called by the HTTP layer; ``None`` means: close without answering) ---

    def create(self, authorization: str | None, body: bytes | None) -> Reply | None:
        """``POST /api/v1/tasks/create``; ``body`` is ``None`` when it was too large to read."""
        with self._lock:
            if self._closed:  # a request that outlived the server: no task, no answer
                return None
            reply = self._gate(authorization) or self._new_task(body)
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
        data = images.render(task.task_id, width=task.width, height=task.height, fmt=fmt)
        return Reply(200, data, CONTENT_TYPES[fmt])

    def not_found(self, *, api: bool) -> Reply:
        """Any other path: API paths answer like the API, others like a plain web server."""
        with self._lock:
            self._autosave()
            if api:
                return self._error(404, "endpoint not found")
            self._counters["not_found"] += 1
            return Reply(404, to_json({"code": 404, "message": "not found"}))

    # --- internals, called with the lock held ---

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

    def _gate(self, authorization: str | None) -> Reply | None:
        """What every create and query passes first: key, rate limit, random 500s and garbage."""
        expected = f"Bearer {self._api_key}".encode()
        if not hmac.compare_digest((authorization or "").encode(), expected):
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

    def _new_task(self, body: bytes | None) -> Task | Reply:
        checked = check_create(body) if body is not None else ["request body: too large"]
        if isinstance(checked, list):
            return self._error(422, "; ".join(checked))
        config = self._config
        if config.credits is not None and self._counters["creates"] >= config.credits:
            return self._error(402, "insufficient credits")

        # Fixed draws per task keep a seeded scenario repeatable.
        fail_draw, reason = self._rng.random(), self._rng.choice(FAIL_REASONS)
        if config.fail_code is not None:  # drawn all the same, so a seeded scenario repeats
            reason = next(kind for kind in FAIL_REASONS if kind[0] == config.fail_code)
        now_ms = int(time.time() * 1000)
        while True:
            task_id = f"task_{checked.model.engine}_{now_ms}_{self._rng.getrandbits(32):08x}"
            if task_id not in self._tasks:
                break
        aspect = checked.output.aspect
        if aspect == "auto":  # the real model follows the input picture, which we never fetch
            ratios = [size for size in IMAGE_SIZES if size != "auto"]
            aspect = ratios[hashlib.sha256(task_id.encode()).digest()[0] % len(ratios)]
        width, height = images.dimensions(aspect, long_side=config.image_size)
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
            fail=reason if fail_draw < config.fail_rate else None,
            callback_url=checked.callback_url,
        )
        counters = dict(self._counters)
        counters["creates"] += 1
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
