"""Frozen settings objects: what a command-line invocation asks the core functions to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ruxa_batch.manifest import DEFAULT_MAX_JOBS


@dataclass(frozen=True)
class ValidateSettings:
    """``ruxa-batch validate``."""

    paths: tuple[Path, ...]
    max_jobs: int = DEFAULT_MAX_JOBS
    quiet: bool = False


@dataclass(frozen=True)
class PlanSettings:
    """``ruxa-batch plan``."""

    path: Path
    format: str = "text"  # text | json | markdown
    max_jobs: int = DEFAULT_MAX_JOBS


@dataclass(frozen=True)
class InitSettings:
    """``ruxa-batch init``."""

    path: Path
