"""Time, injected: the engine, the retry policy and the rate limiter read the clock and sleep
through a :class:`Timer`, so tests run them on a :class:`ManualTimer` instead of sleeping.

A real timer's sleeps can all be ended at once (:meth:`Timer.wake_all`): a run that halts
wakes every job that waits for a backoff or its next status query.
"""

from __future__ import annotations

import asyncio
import time


class Timer:
    """The monotonic clock and sleeps that a halt can cut short."""

    def __init__(self) -> None:
        self._sleepers: set[asyncio.Future[None]] = set()

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or until :meth:`wake_all`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # One future and one timer handle per sleep: thousands of jobs wait at once.
        handle = loop.call_later(max(0.0, seconds), _resolve, future)
        self._sleepers.add(future)
        try:
            await future
        finally:
            handle.cancel()
            self._sleepers.discard(future)

    def wake_all(self) -> None:
        """End every sleep in progress now."""
        for future in list(self._sleepers):
            _resolve(future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ManualTimer(Timer):
    """A clock that only moves when something sleeps, and sleeps that return at once.

    A sleep moves the clock to the end of that sleep (never back), so sleeps that overlap in
    time, as concurrent jobs' do, do not add up. Every sleep is recorded in :attr:`slept`, so a
    test can assert the exact backoff sequence.
    """

    def __init__(self, start: float = 1000.0) -> None:
        super().__init__()
        self.current = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        deadline = self.current + max(0.0, seconds)
        await asyncio.sleep(0)  # let other coroutines run, as a real sleep would
        self.current = max(self.current, deadline)

    def wake_all(self) -> None:
        """Nothing to wake: manual sleeps never block."""
