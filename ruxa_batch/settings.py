"""Frozen settings objects: what a command-line invocation asks the core functions to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ruxa_batch.manifest import DEFAULT_MAX_JOBS
from ruxa_batch.sandbox.config import SandboxConfig


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
    state: Path | None = None
    sandbox: bool = False
    price_per_task: float | None = None


@dataclass(frozen=True)
class InitSettings:
    """``ruxa-batch init``."""

    path: Path


@dataclass(frozen=True)
class RunFlags:
    """``ruxa-batch run``: the flags as given (None where a flag was not given)."""

    path: Path
    base_url: str | None = None
    api_key_file: Path | None = None
    state: Path | None = None
    concurrency: int | None = None
    rate_limit: float | None = None
    poll_interval: float | None = None
    max_attempts: int | None = None
    task_timeout: float | None = None
    price_per_task: float | None = None
    max_tasks: int | None = None
    yes: bool = False
    retry_failed: bool = False
    at_most_once: bool = False
    retry_uncertain: bool = False
    download: bool = True
    max_download_mb: float = 100.0
    retry_backoff: float = 1.0
    max_jobs: int = DEFAULT_MAX_JOBS
    sandbox: bool = False
    sandbox_config: SandboxConfig | None = None
    quiet: bool = False
    verbose: bool = False
    progress: bool | None = None  # None: a bar on a terminal, log lines otherwise
    report: bool = True


@dataclass(frozen=True)
class StatusSettings:
    """``ruxa-batch status``."""

    path: Path
    format: str = "text"
    state: Path | None = None
    max_jobs: int = DEFAULT_MAX_JOBS
    sandbox: bool = False


@dataclass(frozen=True)
class ResultsSettings:
    """``ruxa-batch results``."""

    path: Path
    format: str = "csv"
    output: Path | None = None
    state: Path | None = None
    max_jobs: int = DEFAULT_MAX_JOBS
    sandbox: bool = False


@dataclass(frozen=True)
class ReportSettings:
    """``ruxa-batch report``."""

    path: Path
    output: Path | None = None
    open: bool = False
    embed: bool = False
    state: Path | None = None
    max_jobs: int = DEFAULT_MAX_JOBS
    sandbox: bool = False
