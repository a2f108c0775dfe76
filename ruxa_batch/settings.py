"""Frozen settings objects: what a command-line invocation asks the core functions to do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruxa_batch.decide import DecisionFlags
from ruxa_batch.jobs import DEFAULT_MAX_JOBS
from ruxa_batch.sandbox.config import SandboxConfig
from ruxa_batch.shards import Shard

# Where the API key comes from unless --api-key-file names a file.
API_KEY_ENV = "RUXA_API_KEY"


@dataclass(frozen=True)
class ValidateSettings:
    """``ruxa-batch validate``."""

    paths: tuple[Path, ...]
    max_jobs: int = DEFAULT_MAX_JOBS
    quiet: bool = False
    format: str = "text"  # text | json
    only_manifests: bool = False  # skip other YAML; a CSV stands for the manifests reading it


@dataclass(frozen=True)
class PlanSettings:
    """``ruxa-batch plan``."""

    path: Path
    format: str = "text"  # text | json | markdown
    max_jobs: int = DEFAULT_MAX_JOBS
    state: Path | None = None
    sandbox: bool = False
    tuning: Mapping[str, Any] = field(default_factory=dict)  # flags given, by setting name
    decisions: DecisionFlags = field(default_factory=DecisionFlags)
    shard: Shard | None = None  # plan this shard's jobs only, against its state file
    shards: int | None = None  # show the split of the whole manifest into this many shards


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
    tuning: Mapping[str, Any] = field(default_factory=dict)  # flags given, by setting name
    decisions: DecisionFlags = field(default_factory=DecisionFlags)
    yes: bool = False
    max_jobs: int = DEFAULT_MAX_JOBS
    sandbox: bool = False
    sandbox_config: SandboxConfig | None = None
    quiet: bool = False
    verbose: bool = False
    progress: bool | None = None  # None: a bar on a terminal, log lines otherwise
    report: bool = True
    summary_json: Path | None = None  # write the end-of-run summary here as JSON
    republish: bool = False  # publish local pictures again, ignoring recorded URLs
    shard: Shard | None = None  # run only this shard's jobs, with its own state file


@dataclass(frozen=True)
class StatusSettings:
    """``ruxa-batch status``."""

    path: Path
    format: str = "text"
    state: Path | None = None
    max_jobs: int = DEFAULT_MAX_JOBS
    sandbox: bool = False
    shard: Shard | None = None  # only this shard's jobs, from its state file
    check: bool = False  # exit 1 when some failed, 4 when some are not finished


@dataclass(frozen=True)
class ResultsSettings:
    """``ruxa-batch results``."""

    path: Path
    format: str = "csv"
    output: Path | None = None
    state: Path | None = None
    max_jobs: int = DEFAULT_MAX_JOBS
    sandbox: bool = False
    shard: Shard | None = None  # only this shard's jobs, from its state file
    all_takes: bool = False  # a row for every take of a redone job, not only the current one


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
    shard: Shard | None = None  # only this shard's jobs, from its state file


@dataclass(frozen=True)
class VerifySettings:
    """``ruxa-batch verify``."""

    path: Path
    state: Path | None = None
    max_jobs: int = DEFAULT_MAX_JOBS
    sandbox: bool = False


@dataclass(frozen=True)
class MergeSettings:
    """``ruxa-batch merge``."""

    path: Path
    folders: tuple[Path, ...]
    output: Path | None = None  # default: the manifest's output folder
    partial: bool = False  # merge without the missing shards (their jobs stay pending)
    sandbox: bool = False  # the shards ran on the sandbox: default output is its folder
    max_jobs: int = DEFAULT_MAX_JOBS
    report: bool = True
