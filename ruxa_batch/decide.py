"""What a run does with each job: the one decision that ``plan``, the cost estimate, the
confirmation before a big run, and the engine all take.

:func:`decide` looks at a job's record in the state file and the options that change the answer
(``--retry-failed``, ``--retry-uncertain``, ``--at-most-once``, downloads on or off, attempts per
job) and returns the action and how many tasks it may create. The engine carries the action out;
``plan`` shows it; the estimate adds up the tasks. There is no second table to drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ruxa_batch.jobs import Job, Manifest
from ruxa_batch.models import Prices
from ruxa_batch.pictures import holds, pictures_of
from ruxa_batch.state import JobRecord
from ruxa_batch.statuses import JobStatus, TaskState


class Action(str, Enum):
    """What the run does with one job. The values are the words ``plan`` shows."""

    SUBMIT = "submit"  # no task yet: create one
    RESUBMIT = "resubmit"  # a create's answer was lost: create again (flagged possible duplicate)
    RETRY = "retry"  # failed or uncertain, and a --retry-... flag asks for a fresh start
    REDO = "redo"  # a new take asked for by `redo`: create its task
    POLL = "running"  # a task exists: watch it (a new one only if it fails)
    DOWNLOAD = "download"  # succeeded, but pictures missing, changed or misnamed: put them back
    DONE = "done"  # succeeded, pictures present: nothing to do
    KEEP_FAILED = "failed"  # failed; left alone without --retry-failed
    KEEP_UNCERTAIN = "uncertain"  # its create may have made a task; left alone (--at-most-once)

    def __str__(self) -> str:
        return str(self.value)


# The order of the plan's totals.
ACTIONS: tuple[Action, ...] = tuple(Action)
# Actions that leave the job's record as it is (the engine has nothing to do with them).
IDLE = frozenset({Action.DONE, Action.KEEP_FAILED, Action.KEEP_UNCERTAIN})


@dataclass(frozen=True)
class DecisionFlags:
    """The flags that change what a run does with each job (``run`` and ``plan`` share them)."""

    retry_failed: bool = False
    retry_uncertain: bool = False
    at_most_once: bool = False
    download: bool = True

    def options(self, *, max_attempts: int) -> Options:
        """These flags with the attempts each job may use."""
        return Options(
            max_attempts=max_attempts,
            retry_failed=self.retry_failed,
            retry_uncertain=self.retry_uncertain,
            at_most_once=self.at_most_once,
            download=self.download,
        )


@dataclass(frozen=True)
class Options:
    """The run options that change what happens to a job."""

    max_attempts: int
    retry_failed: bool = False
    retry_uncertain: bool = False
    at_most_once: bool = False
    download: bool = True


@dataclass(frozen=True, slots=True)  # one per job: no __dict__ each
class Decision:
    """One job's action, and the tasks it may create in this run."""

    action: Action
    attempts_used: int  # tasks already created that count against max_attempts
    expected_tasks: int  # tasks created if every task succeeds first time
    most_tasks: int  # tasks created if every attempt fails until the last
    lost_create: bool = False  # an earlier run died between a create leaving and its answer

    @property
    def creates_now(self) -> bool:
        """Whether the job starts this run by creating a task."""
        return self.action in (Action.SUBMIT, Action.RESUBMIT, Action.RETRY, Action.REDO)


def settled(status: JobStatus, options: Options) -> bool:
    """Whether a run with ``options`` leaves alone a job recorded with ``status`` whose last
    create was answered, whatever else its record holds (:func:`decide` gives it an idle
    action): a resumed batch need not read the whole record of its finished jobs."""
    if status == JobStatus.SUCCEEDED:
        return not options.download
    if status == JobStatus.FAILED:
        return not options.retry_failed
    if status == JobStatus.UNCERTAIN:
        return not options.retry_uncertain
    return False


def decide(
    record: JobRecord | None,
    options: Options,
    *,
    files_present: Callable[[JobRecord], bool] = lambda record: True,
) -> Decision:
    """What a run with ``options`` does with a job recorded as ``record`` (None: never run)."""
    limit = options.max_attempts

    def create(action: Action, used: int, *, lost: bool = False) -> Decision:
        left = max(0, limit - used)
        return Decision(action, used, min(1, left), left, lost)

    if record is None:
        return create(Action.SUBMIT, 0)
    if record.open_attempt is not None:
        # A run stopped between a create leaving and its answer: a task may exist.
        if options.at_most_once and not options.retry_uncertain:
            return Decision(Action.KEEP_UNCERTAIN, record.attempts, 0, 0, lost_create=True)
        return create(Action.RESUBMIT, record.attempts, lost=True)
    status = record.status
    if status == JobStatus.SUCCEEDED:
        if options.download and not files_present(record):
            return Decision(Action.DOWNLOAD, record.attempts, 0, 0)
        return Decision(Action.DONE, record.attempts, 0, 0)
    if status == JobStatus.FAILED:
        if options.retry_failed:
            return create(Action.RETRY, 0)
        return Decision(Action.KEEP_FAILED, record.attempts, 0, 0)
    if status == JobStatus.UNCERTAIN:
        if options.retry_uncertain:
            return create(Action.RETRY, 0)
        return Decision(Action.KEEP_UNCERTAIN, record.attempts, 0, 0)
    if status == JobStatus.RUNNING and record.task_id is not None:
        if record.task_state in (TaskState.FAIL, TaskState.TIMEOUT):
            # The run stopped after the task failed and before its next attempt.
            return create(Action.SUBMIT, record.attempts)
        left = max(0, limit - record.attempts)
        return Decision(Action.POLL, record.attempts, 0, left)
    return create(Action.REDO if record.take > 1 else Action.SUBMIT, record.attempts)


@dataclass(frozen=True)
class Estimate:
    """How many tasks a run may create, and what they may cost."""

    expected: int  # if every task succeeds first time
    at_most: int  # if every attempt fails until the last
    prices: Prices | None = None
    cap: int | None = None  # --max-tasks: no run creates more
    uncapped: int = 0  # the expected figure without the cap
    expected_cost: float | None = None  # None: no price, or a model with tasks has none
    at_most_cost: float | None = None
    unpriced: tuple[str, ...] = ()  # models with tasks to create and no price given
    models: tuple[str, ...] = ()  # the models of the jobs with tasks to create

    @classmethod
    def of(
        cls,
        decisions: Iterable[tuple[Decision, str]],
        *,
        prices: Prices | None,
        cap: int | None = None,
    ) -> Estimate:
        """Add up the tasks of every job's decision, with the job's model (within ``cap`` when
        there is one: the first tasks in manifest order are those a run creates), and their
        cost at each model's price."""
        expected = at_most = uncapped = 0
        expected_cost = at_most_cost = 0.0
        unpriced: dict[str, None] = {}
        used: dict[str, None] = {}
        for decision, model in decisions:
            uncapped += decision.expected_tasks
            now = (
                decision.expected_tasks
                if cap is None
                else min(decision.expected_tasks, cap - expected)
            )
            most = decision.most_tasks if cap is None else min(decision.most_tasks, cap - at_most)
            expected += now
            at_most += most
            if now or most:
                used[model] = None
                price = prices.of_model(model) if prices is not None else None
                if price is None:
                    unpriced[model] = None
                else:
                    expected_cost += now * price
                    at_most_cost += most * price
        known = prices is not None and not unpriced
        return cls(
            expected,
            at_most,
            prices,
            cap,
            uncapped,
            expected_cost if known else None,
            at_most_cost if known else None,
            tuple(unpriced) if prices is not None else (),
            tuple(used),
        )

    def cost_text(self, *, strong: str = "") -> str | None:
        """``Cost at 0.04 per task: expected 4.00, at most 12.00`` (None without prices);
        ``strong`` wraps the amounts (``**`` in markdown)."""
        if self.prices is None:
            return None
        if self.expected_cost is None or self.at_most_cost is None:
            return f"Cost unknown: price_per_task gives no price for {', '.join(self.unpriced)}"
        expected, at_most = money_pair(self.expected_cost, self.at_most_cost)
        return (
            f"Cost at {self.prices.text(self.models)} per task: expected "
            f"{strong}{expected}{strong}, at most {strong}{at_most}{strong}"
        )

    def lines(self) -> list[str]:
        """The estimate in words."""
        lines = [
            f"Tasks to create: {self.expected:,} if each succeeds first time, "
            f"at most {self.at_most:,} with retries"
        ]
        cost = self.cost_text()
        if cost is not None:
            lines.append(cost)
        if self.cap is not None:
            left = self.uncapped - self.expected
            more = f"; {left:,} more in later runs" if left > 0 else ""
            lines.append(f"Capped at {self.cap:,} tasks per run (max_tasks){more}")
        return lines


def money(amount: float) -> str:
    """``12``, ``1,250``, ``3.50``."""
    return f"{amount:,.2f}" if amount != int(amount) else f"{int(amount):,}"


def money_pair(first: float, second: float) -> tuple[str, str]:
    """Two amounts shown alike: ``2.00`` beside ``6.80``, not ``2`` beside ``6.80``."""
    if first == int(first) and second == int(second):
        return money(first), money(second)
    return f"{first:,.2f}", f"{second:,.2f}"


def pictures_on_disk(output_dir: Path, manifest: Manifest) -> Callable[[Job, JobRecord], bool]:
    """Whether a succeeded job's pictures are all in ``output_dir`` under the names the manifest
    gives the job now, each with the bytes recorded at download (none recorded: no).

    That a file exists is not enough: after a prompt was edited and reverted, or a job renamed
    and its id given to a new job, the name may hold another job's picture. A renamed job's
    pictures are under its old names: not in place either (the engine moves them).
    """

    def present(job: Job, record: JobRecord) -> bool:
        pictures = pictures_of(record)
        if not pictures:
            return False
        if any(
            picture.name != manifest.output_name(job, n) for n, picture in enumerate(pictures, 1)
        ):
            return False
        return all(holds(output_dir / picture.name, picture) for picture in pictures)

    return present
