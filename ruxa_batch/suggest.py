"""'Did you mean' suggestions for misspelled keys and enum values."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from typing import Any

_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:x/]\s*(\d+(?:\.\d+)?)\s*$")


def close_matches(word: str, choices: Iterable[str], *, limit: int = 1) -> list[str]:
    """The choices nearest to ``word`` by spelling (case-insensitive), best first."""
    options = list(choices)
    lowered = {option.lower(): option for option in options}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=limit, cutoff=0.6)
    return [lowered[item] for item in found]


def nearest_ratios(value: str, sizes: Iterable[str], *, limit: int = 2) -> list[str]:
    """Aspect ratios nearest to ``value`` (``16:10`` -> ``3:2``, ``16:9``), or [] if not a ratio."""
    match = _RATIO.match(value)
    if not match or float(match.group(2)) == 0 or float(match.group(1)) == 0:
        return []
    wanted = math.log(float(match.group(1)) / float(match.group(2)))
    ranked: list[tuple[float, str]] = []
    for size in sizes:
        parts = size.split(":")
        if len(parts) == 2:
            ranked.append((abs(math.log(int(parts[0]) / int(parts[1])) - wanted), size))
    ranked.sort()
    return [size for _, size in ranked[:limit]]


def did_you_mean(candidates: list[str]) -> str:
    """``"; did you mean 'x'?"`` / ``"; did you mean 'x' or 'y'?"`` / ``""``."""
    if not candidates:
        return ""
    quoted = [f"'{item}'" for item in candidates]
    if len(quoted) == 1:
        return f"; did you mean {quoted[0]}?"
    return f"; did you mean {', '.join(quoted[:-1])} or {quoted[-1]}?"


def show(value: Any, *, width: int = 60) -> str:
    """A short, safe rendering of a user value for an error message."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (str, int, float)):
        text = repr(value)
    else:
        text = type_name(value)
    if len(text) > width:
        text = text[: width - 4] + "...'"
    return text


def type_name(value: Any) -> str:
    """A human word for the YAML type of ``value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
