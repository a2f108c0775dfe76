"""One token bucket shared by creates and status queries, lowered adaptively on 429s."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ruxa_batch.timing import Timer

# The longest pause one 429 imposes on every request; a longer Retry-After is the asking
# request's problem alone (its retry policy gives it up).
MAX_PAUSE = 60.0


class Abandoned(Exception):
    """A request left the queue without a token: it will not be sent."""


class RateLimiter:
    """At most ``rate`` requests per second, in FIFO order.

    A 429 halves the current rate (never below 5% of the configured one) and pauses everyone
    for ``Retry-After`` seconds (or one second without it); successes raise it back by 2% of the
    configured rate each, so the limiter settles just under what the server accepts.
    """

    def __init__(
        self,
        rate: float,
        *,
        timer: Timer | None = None,
        burst: float | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = rate
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate / 10)
        self.tokens = self.capacity
        self.timer = timer if timer is not None else Timer()
        self.updated = self.timer.now()
        self.paused_until = 0.0
        self.rate_limited = 0
        self.granted = 0  # tokens handed out
        self.opened = False
        self._busy = False  # a request holds the turn (waits for or takes a token)
        self._waiting: deque[tuple[asyncio.Future[bool], Callable[[], bool] | None]] = deque()

    def open(self) -> None:
        """Let every waiter through at once (the run is stopping; they will send nothing)."""
        self.opened = True

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(
        self,
        abandon: Callable[[], bool] | None = None,
        granted: Callable[[], None] | None = None,
    ) -> None:
        """Wait for a token, in arrival order.

        A request whose ``abandon()`` turns true while it waits leaves without a token
        (:class:`Abandoned`), as soon as :meth:`sweep` is called or its turn comes: a create
        that can no longer be sent must not hold up the status queries behind it. ``granted``
        runs the moment the token is taken.
        """
        if abandon is not None and abandon():
            raise Abandoned
        if self._busy:
            turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._waiting.append((turn, abandon))
            try:
                mine = await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled() and turn.result():
                    self._pass_on()  # the turn was handed over as this request was cancelled
                else:
                    turn.cancel()  # _pass_on skips it
                raise
            if not mine:
                raise Abandoned
        else:
            self._busy = True
        try:
            while not self.opened:
                if abandon is not None and abandon():
                    raise Abandoned
                now = self.timer.now()
                if now < self.paused_until:
                    await self.timer.sleep(min(0.25, self.paused_until - now))
                    continue
                self._refill(now)
                if self.tokens >= 1:
                    self.tokens -= 1
                    self.granted += 1
                    if granted is not None:
                        granted()
                    return
                await self.timer.sleep(min(0.25, (1 - self.tokens) / self.rate))
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        """Hand the turn to the next request still waiting (or free the limiter)."""
        while self._waiting:
            turn, _ = self._waiting.popleft()
            if not turn.done():
                turn.set_result(True)
                return
        self._busy = False

    def sweep(self) -> None:
        """Send away every waiting request whose ``abandon()`` is now true."""
        kept: deque[tuple[asyncio.Future[bool], Callable[[], bool] | None]] = deque()
        for turn, abandon in self._waiting:
            if not turn.done() and abandon is not None and abandon():
                turn.set_result(False)
            else:
                kept.append((turn, abandon))
        self._waiting = kept

    def on_rate_limited(self, retry_after: float | None) -> None:
        """The server answered 429: slow down and pause."""
        self.rate_limited += 1
        now = self.timer.now()
        self._refill(now)
        self.rate = max(self.max_rate * 0.05, self.rate / 2)
        self.tokens = 0.0
        pause = min(retry_after, MAX_PAUSE) if retry_after else 1.0
        self.paused_until = max(self.paused_until, now + pause)

    def on_success(self) -> None:
        """A request went through: creep back towards the configured rate."""
        if self.rate < self.max_rate:
            self.rate = min(self.max_rate, self.rate + self.max_rate * 0.02)
