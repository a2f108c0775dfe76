"""The one retry policy: which errors are retried, how often, and how long to wait.

A :class:`RetryPolicy` names the errors it retries, explicitly, each with the number of tries in
a row it may cost (retrying everything is a bug: an error outside the set goes straight to the
caller). Errors in ``free`` (a 429) are retried without counting, after ``Retry-After`` when the
server sends one. Between tries it waits with exponential backoff and full jitter, up to a cap,
within an optional total time; a halted run stops retrying at once. Time comes from an injected
:class:`~ruxa_batch.timing.Timer`, so tests of backoff run on a manual clock.

The policies wrap one HTTP call each; recording what happened in the state is the caller's
work, done before the error reaches the policy.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from ruxa_batch.timing import Timer

T = TypeVar("T")

MAX_BACKOFF = 30.0
# The longest Retry-After obeyed: a server asking for more gets the call given up (the job is
# left for a later run with the reason), not every request of the run paused for a day.
MAX_RETRY_AFTER = 600.0


class Halted(Exception):
    """The run halted while a call was waiting to be tried again."""


class GaveUp(Exception):
    """A retried call failed as many times in a row as its policy allows (or asked for a wait
    longer than it allows)."""

    def __init__(self, last: Exception, tries: int, reason: str | None = None) -> None:
        super().__init__(reason or f"gave up after {tries} tries: {last}")
        self.last = last
        self.tries = tries
        self.reason = reason


@dataclass(frozen=True)
class RetryPolicy:
    """What to retry and how.

    ``on`` maps each retried error class to the most tries in a row that may end in it (the first
    matching class counts, so list subclasses before their bases); ``patience`` may give a class
    a minimum time, from its first occurrence, before it is given up even when its tries are
    spent; ``free`` errors are retried without counting, waiting ``Retry-After`` (their
    ``retry_after`` attribute) if they carry one, up to ``max_wait``.
    """

    on: Mapping[type[Exception], int]
    free: tuple[type[Exception], ...] = ()
    base: float = 1.0  # the first pause; each further failure doubles it
    cap: float = MAX_BACKOFF
    total: float | None = None  # seconds from the first try after which nothing is retried
    patience: Mapping[type[Exception], float] = field(default_factory=dict)
    max_wait: float = MAX_RETRY_AFTER

    def __post_init__(self) -> None:
        if not self.on and not self.free:
            raise ValueError("a retry policy must name the errors it retries")
        if any(tries < 1 for tries in self.on.values()):
            raise ValueError("every retried error needs at least one try")

    def rule(self, error: Exception) -> tuple[type[Exception], int] | None:
        """The retried class ``error`` counts as, and its tries in a row (None: not retried)."""
        for kind, tries in self.on.items():
            if isinstance(error, kind):
                return kind, tries
        return None

    def backoff(self, failures: int, rng: random.Random) -> float:
        """The pause after ``failures`` counted failures in a row: full jitter in the upper half."""
        ceiling = min(self.cap, self.base * 2 ** max(0, failures - 1))
        return rng.uniform(ceiling / 2, ceiling)

    def with_base(self, base: float) -> RetryPolicy:
        """The same policy with another first pause."""
        return replace(self, base=base)


class Retrier:
    """Runs calls under a policy with one timer, one random source and one halt switch."""

    def __init__(
        self,
        *,
        timer: Timer,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        halted: Callable[[], bool] = lambda: False,
        rng: random.Random | None = None,
    ) -> None:
        self.timer = timer
        self.sleep = sleep if sleep is not None else timer.sleep
        self.halted = halted
        self.rng = rng if rng is not None else random.Random()

    async def call(self, policy: RetryPolicy, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()`` until it succeeds, raises an error the policy does not retry
        (raised as is), fails too often (:class:`GaveUp`) or the run halts (:class:`Halted`)."""
        started = self.timer.now()
        failures = 0
        counts: dict[type[Exception], int] = {}
        first_seen: dict[type[Exception], float] = {}
        while True:
            if self.halted():
                raise Halted
            try:
                return await attempt()
            except policy.free as error:
                retry_after = getattr(error, "retry_after", None)
                pause = retry_after if retry_after is not None else policy.backoff(1, self.rng)
                last: Exception = error
                if pause > policy.max_wait:
                    raise GaveUp(
                        error,
                        failures,
                        f"the server asked to wait {pause:g} s (Retry-After), longer than the "
                        f"{policy.max_wait:g} s allowed",
                    ) from error
            except Exception as error:
                rule = policy.rule(error)
                if rule is None:
                    raise
                kind, limit = rule
                counts[kind] = counts.get(kind, 0) + 1
                first_seen.setdefault(kind, self.timer.now())
                failures += 1
                waited = self.timer.now() - first_seen[kind]
                if counts[kind] >= limit and waited >= policy.patience.get(kind, 0.0):
                    raise GaveUp(error, failures) from error
                pause = policy.backoff(failures, self.rng)
                last = error
            if policy.total is not None and self.timer.now() + pause - started > policy.total:
                raise GaveUp(last, failures + 1) from last
            await self.sleep(pause)
