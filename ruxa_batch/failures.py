"""Which task failures are worth a new task: the rules, their defaults, and the one function that
applies them.

A task that fails because of the request itself (an input picture the API cannot download, a
prompt the safety filter refuses) fails again on every retry, and every retry is paid for. Such a
failure is of class ``request`` and fails its job at once; every other failure (a 500, "please try
again", a code nobody documented, a timeout) is ``transient`` and gets a new task while
``max_attempts`` allows. The manifest's ``run: {permanent_failures: ...}`` replaces the defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ruxa_batch.statuses import FailureClass

# failCode values the sandbox (and the API's documentation) give for a request at fault:
# 400 content refused by the safety filter, 422 an input picture could not be downloaded.
DEFAULT_CODES: tuple[str, ...] = ("400", "422")
# Case-insensitive substrings of failMsg that say the same when the code is missing or unusual.
DEFAULT_MESSAGES: tuple[str, ...] = (
    "content safety",
    "flagged",
    "could not be downloaded",
    "cannot be downloaded",
    "invalid image",
)


@dataclass(frozen=True)
class FailureRules:
    """Which failures are of class ``request``: any failCode in ``codes``, or any failMsg that
    contains one of ``messages`` (ignoring case)."""

    codes: tuple[str, ...] = DEFAULT_CODES
    messages: tuple[str, ...] = DEFAULT_MESSAGES

    @classmethod
    def of(cls, value: FailureRules | Mapping[str, Any]) -> FailureRules:
        """Rules from the manifest's ``permanent_failures`` mapping; a key left out keeps its
        default, an empty list switches that half off."""
        if isinstance(value, FailureRules):
            return value
        codes: Iterable[Any] = value.get("codes", DEFAULT_CODES)
        messages: Iterable[Any] = value.get("messages", DEFAULT_MESSAGES)
        return cls(tuple(str(code) for code in codes), tuple(str(text) for text in messages))


DEFAULT_RULES = FailureRules()


def classify(
    fail_code: str | None, fail_msg: str | None, rules: FailureRules = DEFAULT_RULES
) -> FailureClass:
    """The class of a task failure reported with ``fail_code`` and ``fail_msg``."""
    if fail_code is not None and str(fail_code).strip() in rules.codes:
        return FailureClass.REQUEST
    text = (fail_msg or "").casefold()
    if any(pattern.casefold() in text for pattern in rules.messages if pattern):
        return FailureClass.REQUEST
    return FailureClass.TRANSIENT
