"""The one retry policy, on a manual clock: what is retried, how long it waits, when it stops."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from ruxa_batch.client import AuthRejected, NoAnswer, NotFound, NotSent, RateLimited, ServerError
from ruxa_batch.engine import CREATE, CREATE_AT_MOST_ONCE, DOWNLOAD, QUERY
from ruxa_batch.retry import GaveUp, Halted, Retrier, RetryPolicy
from ruxa_batch.timing import ManualTimer


def scripted(*outcomes: Exception | str) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """A call that raises or returns each outcome in turn; the list counts the calls."""
    calls = [0]

    async def call() -> str:
        outcome = outcomes[calls[0]]
        calls[0] += 1
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return call, calls


def retrier(timer: ManualTimer, **kwargs: object) -> Retrier:
    return Retrier(timer=timer, rng=random.Random(7), **kwargs)  # type: ignore[arg-type]


POLICY = RetryPolicy(on={NotSent: 4, NotFound: 2}, free=(RateLimited,), base=1.0, cap=5.0)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    timer = ManualTimer()
    call, calls = scripted(*[NotSent("x")] * 3, "ok")
    policy = RetryPolicy(on={NotSent: 10}, base=1.0, cap=3.0)
    assert asyncio.run(retrier(timer).call(policy, call)) == "ok"
    assert calls[0] == 4
    # Full jitter in the upper half of 1, 2, then 4 capped at 3.
    low_high = [(0.5, 1.0), (1.0, 2.0), (1.5, 3.0)]
    assert len(timer.slept) == 3
    for pause, (low, high) in zip(timer.slept, low_high, strict=True):
        assert low <= pause <= high


def test_an_error_outside_the_set_is_raised_at_once() -> None:
    timer = ManualTimer()
    call, calls = scripted(AuthRejected(401, "bad key"), "never")
    with pytest.raises(AuthRejected):
        asyncio.run(retrier(timer).call(POLICY, call))
    assert calls[0] == 1 and timer.slept == []


def test_each_error_class_has_its_own_limit() -> None:
    timer = ManualTimer()
    call, calls = scripted(NotSent("a"), NotFound(404, "gone"), NotSent("b"), NotFound(404, "gone"))
    with pytest.raises(GaveUp) as caught:
        asyncio.run(retrier(timer).call(POLICY, call))
    assert isinstance(caught.value.last, NotFound)
    assert calls[0] == 4 and caught.value.tries == 4


def test_retry_after_is_honoured_and_429s_cost_no_try() -> None:
    timer = ManualTimer()
    limited = [RateLimited(429, "slow down", 7.0), RateLimited(429, "slow down", None)]
    call, calls = scripted(*limited, NotSent("x"), NotSent("y"), NotSent("z"), "ok")
    assert asyncio.run(retrier(timer).call(POLICY, call)) == "ok"
    assert timer.slept[0] == 7.0  # Retry-After, exactly
    assert 0.5 <= timer.slept[1] <= 1.0  # no Retry-After: the first backoff
    assert calls[0] == 6  # three NotSent used 3 of the 4 tries: the 429s counted for nothing


def test_a_halt_stops_retrying_before_the_next_try() -> None:
    timer = ManualTimer()
    halted = [False]

    async def sleep(seconds: float) -> None:
        halted[0] = True  # the run halts while this call waits for its next try
        await timer.sleep(seconds)

    call, calls = scripted(NotSent("x"), "never")
    with pytest.raises(Halted):
        asyncio.run(retrier(timer, sleep=sleep, halted=lambda: halted[0]).call(POLICY, call))
    assert calls[0] == 1


def test_total_time_bounds_the_retries() -> None:
    timer = ManualTimer()
    policy = RetryPolicy(on={NotSent: 100}, base=10.0, cap=10.0, total=25.0)
    call, calls = scripted(*[NotSent("x")] * 100)
    with pytest.raises(GaveUp):
        asyncio.run(retrier(timer).call(policy, call))
    assert sum(timer.slept) <= 25.0
    assert calls[0] == len(timer.slept) + 1 < 10


def test_a_policy_must_name_what_it_retries() -> None:
    with pytest.raises(ValueError, match="must name the errors"):
        RetryPolicy(on={})


def test_the_engine_policies_never_retry_a_rejected_key_and_only_safe_creates_at_most_once() -> (
    None
):
    for policy in (CREATE, CREATE_AT_MOST_ONCE, QUERY, DOWNLOAD):
        assert policy.rule(AuthRejected(401, "no")) is None
    # A create whose answer was lost may have made a task: retried only when allowed.
    assert CREATE.rule(NoAnswer("timeout")) is not None
    assert CREATE_AT_MOST_ONCE.rule(NoAnswer("timeout")) is None
    assert CREATE_AT_MOST_ONCE.rule(ServerError(500, "boom")) is not None
    assert QUERY.rule(NotFound(404, "gone")) == (NotFound, 3)
