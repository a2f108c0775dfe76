"""A sandbox task: what was asked, what it will end as, and when; its state follows the clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ruxa_batch.sandbox.rules import EXTENSIONS, Output


@dataclass(frozen=True)
class Task:
    """One created task; its state is derived from the clock."""

    task_id: str
    request: dict[str, Any]  # the create body as received
    body_hash: str  # of model + input only
    output: Output
    width: int
    height: int
    created: float  # time.monotonic() of this process (a restored task's is computed)
    create_ms: int  # wall clock, ms since the epoch: what is stored
    duration: float
    fail: tuple[str, str] | None  # (failCode, failMsg) when the task ends in `fail`
    callback_url: str | None
    # The first input picture, when the sandbox read it (it was on this machine): its result is
    # drawn from it. Kept by content in the sandbox's inputs or uploads.
    input_sha256: str | None = None
    input_ext: str | None = None

    def state(self, now: float) -> str:
        """``waiting``/``queuing``/``generating`` by elapsed time, then ``success`` or ``fail``."""
        elapsed = now - self.created
        if elapsed >= self.duration:
            return "fail" if self.fail else "success"
        if elapsed < 0.1 * self.duration:
            return "waiting"
        if elapsed < 0.3 * self.duration:
            return "queuing"
        return "generating"

    @property
    def ends(self) -> float:
        """The monotonic time at which it ends."""
        return self.created + self.duration

    @property
    def file_name(self) -> str:
        """The name of its one result file."""
        return f"1.{EXTENSIONS[self.output.output_format]}"
