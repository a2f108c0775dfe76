"""Setting up a run (endpoint, key, state, limits), running the engine, and closing it properly.

Whatever way the run ends (every job done, a 401, an empty credit balance, Ctrl-C), the state is
already safe and ``results.csv``/``results.json`` are rewritten before the process exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruxa_batch.addresses import is_loopback
from ruxa_batch.client import RuxaClient
from ruxa_batch.engine import Engine, EngineOptions, RunOutcome
from ruxa_batch.errors import (
    EXIT_API_STOPPED,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    RuxaBatchError,
    UsageError,
    emit,
)
from ruxa_batch.jobs import Manifest, display_path
from ruxa_batch.manifest import RUN_DEFAULTS, load_manifest
from ruxa_batch.plan import estimate, make_plan
from ruxa_batch.progress import Progress
from ruxa_batch.ratelimit import RateLimiter
from ruxa_batch.report import REPORT_FILENAME, write_report
from ruxa_batch.results import build_table, write_results
from ruxa_batch.settings import RunFlags
from ruxa_batch.state import StateStore, output_dir_for, state_path_for

DEFAULT_BASE_URL = "https://api.ruxa.ai"
SANDBOX_ENDPOINT = "sandbox"


class StoppedEarly(RuxaBatchError):
    """The run stopped before every job was submitted: key rejected, credits out, or the cap."""

    exit_code = EXIT_API_STOPPED


@dataclass(frozen=True)
class Endpoint:
    """Where requests go and with which key (the key never appears in repr or logs)."""

    base_url: str
    api_key: str = field(repr=False)
    identity: str  # recorded in the state file: a state belongs to one endpoint


def resolve_tuning(manifest: Manifest, flags: RunFlags) -> dict[str, Any]:
    """Flags win over the manifest's `run:` keys, which win over the defaults."""
    tuning = dict(RUN_DEFAULTS)
    tuning.update({key: value for key, value in manifest.run.items() if key in RUN_DEFAULTS})
    for key in RUN_DEFAULTS:
        value = getattr(flags, key)
        if value is not None:
            tuning[key] = value
    return tuning


def check_base_url(url: str) -> str:
    """Refuse anything but https, or http to a loopback address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid base URL {url!r}: expected https://host")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UsageError(
            f"refusing plain http:// to {parts.hostname}: the API key would cross the network "
            "unencrypted; use https:// (http is allowed only for loopback addresses)"
        )
    return url.rstrip("/")


def read_api_key(flags: RunFlags) -> str:
    """The key from --api-key-file or RUXA_API_KEY; a clear error when there is none."""
    if flags.api_key_file is not None:
        try:
            key = flags.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UsageError(f"cannot read API key file {flags.api_key_file}: {reason}") from None
        if not key:
            raise UsageError(f"API key file {flags.api_key_file} is empty")
        return key
    key = os.environ.get("RUXA_API_KEY", "").strip()
    if not key:
        raise UsageError(
            "no API key: set the RUXA_API_KEY environment variable or pass --api-key-file "
            "(or try the local sandbox with --sandbox)"
        )
    return key


@contextmanager
def endpoint_for(flags: RunFlags) -> Iterator[Endpoint]:
    """The endpoint of this run; with --sandbox, a local sandbox serving for its duration."""
    if flags.sandbox and flags.base_url:
        raise UsageError("--base-url and --sandbox exclude each other: choose one endpoint")
    if not flags.sandbox:
        base = check_base_url(flags.base_url or os.environ.get("RUXA_BASE_URL") or DEFAULT_BASE_URL)
        yield Endpoint(base, read_api_key(flags), base)
        return
    from ruxa_batch.sandbox import SandboxConfig, SandboxServer

    config = flags.sandbox_config or SandboxConfig()
    with SandboxServer(config, host="127.0.0.1", port=0) as server:
        yield Endpoint(server.base_url, server.api_key, SANDBOX_ENDPOINT)


def progress_mode(flags: RunFlags) -> str:
    """``bar`` on a terminal, ``log`` otherwise, ``off`` with --quiet or --no-progress."""
    if flags.quiet or flags.progress is False:
        return "off"
    if flags.progress is True:
        return "bar"
    return "bar" if sys.stderr.isatty() else "log"


def run_batch(flags: RunFlags) -> int:
    """``ruxa-batch run``: submit, poll, download and record every job of a manifest."""
    manifest = load_manifest(flags.path, max_jobs=flags.max_jobs)
    tuning = resolve_tuning(manifest, flags)
    output_dir = output_dir_for(manifest.output.dir, sandbox=flags.sandbox)
    state_path = state_path_for(output_dir, flags.state)
    with endpoint_for(flags) as endpoint:
        store = StateStore.open_for_run(state_path)
        try:
            return _run_with_store(manifest, flags, tuning, output_dir, store, endpoint)
        finally:
            store.close()


def _run_with_store(
    manifest: Manifest,
    flags: RunFlags,
    tuning: Mapping[str, Any],
    output_dir: Path,
    store: StateStore,
    endpoint: Endpoint,
) -> int:
    recorded = store.get_meta("endpoint")
    if recorded is not None and recorded != endpoint.identity:
        raise UsageError(
            f"{display_path(store.path)} records tasks of {recorded}, not of "
            f"{endpoint.identity}; their task IDs mean nothing there. Use --state to keep a "
            "separate state file for this endpoint"
        )
    if recorded is None:
        store.set_meta("endpoint", endpoint.identity)
    store.start_run()
    options = EngineOptions(
        output_dir=output_dir,
        poll_interval=float(tuning["poll_interval"]),
        max_attempts=int(tuning["max_attempts"]),
        task_timeout=float(tuning["task_timeout"]),
        retry_failed=flags.retry_failed,
        at_most_once=flags.at_most_once,
        retry_uncertain=flags.retry_uncertain,
        download=flags.download,
        max_download_bytes=int(flags.max_download_mb * 1024 * 1024),
        backoff_base=flags.retry_backoff,
        max_tasks=tuning["max_tasks"],
    )
    if not confirmed(manifest, store, flags, tuning):
        emit(["not confirmed: nothing was sent"])
        return EXIT_INTERRUPTED
    progress = Progress(
        total=len(manifest.jobs),
        mode=progress_mode(flags),
        verbose=flags.verbose,
        quiet=flags.quiet,
    )
    client = RuxaClient(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        concurrency=int(tuning["concurrency"]),
        limiter=RateLimiter(float(tuning["rate_limit"])),
    )
    engine = Engine(manifest, store, client, options, events=progress)
    started = time.monotonic()
    try:
        asyncio.run(_drive(engine, progress))
    except (asyncio.CancelledError, KeyboardInterrupt):
        engine.outcome.stopped_by = "interrupted"
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    outcome = engine.outcome
    store.finish_run(outcome=outcome.stopped_by or "finished", tasks_created=outcome.tasks_created)
    table = build_table(manifest, store.job_records())
    summary = {
        **table.counts(),
        "jobs": len(table.rows),
        "possible_duplicates": table.possible_duplicates(),
        "tasks_created_this_run": outcome.tasks_created,
        "requests_sent_this_run": client.requests,
        "seconds": round(elapsed, 1),
        "stopped_by": outcome.stopped_by,
        "max_tasks": tuning["max_tasks"],
    }
    paths = list(write_results(table, output_dir, summary))
    if flags.report:
        paths.append(
            write_report(
                table,
                output_dir=output_dir,
                destination=output_dir / REPORT_FILENAME,
                history=store.history(),
            )
        )
    if not flags.quiet:
        emit(_summary_lines(summary, paths, output_dir), sys.stdout)
    return _exit_code(outcome, summary)


async def _drive(engine: Engine, progress: Progress) -> None:
    loop = asyncio.get_running_loop()
    presses = 0

    def on_signal() -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            os._exit(EXIT_INTERRUPTED)  # the state is already safe; leave at once
        progress.line(
            "stopping: waiting for requests in flight, then saving results "
            "(Ctrl-C again to quit at once; the state is already safe)"
        )
        engine.halt("interrupted")

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows, threads
            pass
    progress.start()
    try:
        await engine.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await engine.client.aclose()


CONFIRM_ABOVE = 100  # tasks; a bigger run asks first when a person is at the terminal


def is_interactive() -> bool:
    """A person at a terminal (both standard input and output)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def confirmed(
    manifest: Manifest, store: StateStore, flags: RunFlags, tuning: Mapping[str, Any]
) -> bool:
    """Ask before a run that may create more than CONFIRM_ABOVE tasks; never off a terminal."""
    if flags.yes or not is_interactive():
        return True
    cost = estimate(
        make_plan(manifest, store.job_records()),
        max_attempts=int(tuning["max_attempts"]),
        price=tuning["price_per_task"],
        retry_failed=flags.retry_failed,
        retry_uncertain=flags.retry_uncertain,
    )
    if cost.expected <= CONFIRM_ABOVE:
        return True
    cap = tuning["max_tasks"]
    lines = cost.lines() + ([f"Capped at {cap:,} tasks by --max-tasks"] if cap else [])
    emit(lines, sys.stdout)
    answer = input("Continue? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _summary_lines(summary: Mapping[str, Any], paths: Sequence[Path], out: Path) -> list[str]:
    lines = [
        f"{summary['succeeded']:,} succeeded, {summary['failed']:,} failed, "
        f"{summary['uncertain']:,} uncertain, {summary['running']:,} running, "
        f"{summary['pending']:,} pending (of {summary['jobs']:,} jobs)",
        f"tasks created this run: {summary['tasks_created_this_run']:,}; possible duplicates: "
        f"{summary['possible_duplicates']:,}; time: {summary['seconds']:.1f} s",
        f"pictures: {display_path(out)}",
        *(f"{path.stem}: {display_path(path)}" for path in paths),
    ]
    return lines


def _exit_code(outcome: RunOutcome, summary: Mapping[str, Any]) -> int:
    if outcome.stopped_by == "interrupted":
        emit(["interrupted: the state is saved; run the same command again to continue"])
        return EXIT_INTERRUPTED
    if outcome.stopped_by == "auth":
        raise StoppedEarly(
            "the API rejected the key (401); no job was marked failed. Check RUXA_API_KEY "
            "and run again to continue"
        )
    if outcome.stopped_by == "max_tasks":
        raise StoppedEarly(
            f"stopped at the cap of {summary['max_tasks']:,} tasks for this run (--max-tasks): "
            f"{outcome.not_submitted:,} jobs were not submitted; run again to continue with them"
        )
    if outcome.stopped_by == "credits":
        raise StoppedEarly(
            f"the API reports insufficient credits (402): {outcome.not_submitted:,} jobs were not "
            "submitted; add credits and run the same command again to continue with them"
        )
    unfinished = summary["failed"] + summary["uncertain"] + summary["pending"] + summary["running"]
    if unfinished:
        emit([f"{unfinished:,} jobs did not succeed; see the results file for each error"])
        return EXIT_JOBS_FAILED
    return EXIT_OK
