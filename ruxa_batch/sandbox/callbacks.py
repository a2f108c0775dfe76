"""Callback delivery: one scheduler thread, and a guard that only ever talks to loopback."""

from __future__ import annotations

import heapq
import http.client
import itertools
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from ruxa_batch.addresses import is_loopback

SEND_TIMEOUT = 2.0  # a stuck receiver must not hold up every later callback for long


def is_loopback_url(url: str) -> bool:
    """True when ``url``'s host is ``localhost`` or a loopback IP literal (no DNS lookup)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return is_loopback(host)


def post_json(url: str, body: bytes) -> int:
    """POST ``body`` to a loopback ``url``; returns the HTTP status. Raises ``OSError``."""
    if not is_loopback_url(url):
        raise ValueError(f"refusing to send a callback off this machine: {url}")
    parts = urlsplit(url)
    host = "127.0.0.1" if parts.hostname == "localhost" else (parts.hostname or "")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(host, parts.port, timeout=SEND_TIMEOUT)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        connection.request(
            "POST",
            target,
            body=body,
            headers={"Content-Type": "application/json", "Host": parts.netloc},
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


class Scheduler:
    """Runs ``fire(key)`` at each key's due time (``time.monotonic`` clock) on one thread."""

    def __init__(self, fire: Callable[[str], None]) -> None:
        self._fire = fire
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()  # keeps equal due times first-in, first-out
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="sandbox-callbacks", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def add(self, due: float, key: str) -> None:
        """Fire ``key`` at monotonic time ``due``."""
        with self._wake:
            heapq.heappush(self._heap, (due, next(self._order), key))
            self._wake.notify()

    def stop(self) -> None:
        """Stop the thread; callbacks not yet due are dropped."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=SEND_TIMEOUT + 1)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped:
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._wake.wait(wait)
                    else:
                        self._wake.wait()
                if self._stopped:
                    return
                _, _, key = heapq.heappop(self._heap)
            self._fire(key)
