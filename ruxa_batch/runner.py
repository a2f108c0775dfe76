"""Setting up a run (endpoint, key, state, limits), running the engine, and closing it properly.

Whatever way the run ends (every job done, a 401, an empty credit balance, Ctrl-C), the state is
already safe and ``results.csv``/``results.json`` are rewritten before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from ruxa_batch.client import RuxaClient, remove_stale_partials
from ruxa_batch.engine import Engine, EngineOptions, RunOutcome, window_size
from ruxa_batch.errors import (
    EXIT_API_STOPPED,
    EXIT_INTERRUPTED,
    EXIT_SOFTWARE,
    RuxaBatchError,
    UsageError,
    emit,
    exit_code_for_jobs,
)
from ruxa_batch.jobs import Manifest, display_path, job_keys, output_dir_for
from ruxa_batch.local_files import DEFAULT_UPLOAD_CONCURRENCY, plural, size_text
from ruxa_batch.manifest import load_manifest
from ruxa_batch.plan import make_plan
from ruxa_batch.progress import Progress
from ruxa_batch.ratelimit import RateLimiter
from ruxa_batch.redo import (
    RedoRequest,
    driven,
    planning_records,
    select,
    start_takes,
    within_cap,
)
from ruxa_batch.redo import summary_lines as redo_summary
from ruxa_batch.report import REPORT_FILENAME, report_writer, run_flags
from ruxa_batch.results import Table, build_table, write_atomic, write_results
from ruxa_batch.settings import API_KEY_ENV, RunFlags
from ruxa_batch.shards import (
    check_folder,
    claim_state,
    manifest_revision,
    own_name,
    shard_manifest,
)
from ruxa_batch.shards import state_path as shard_state_path
from ruxa_batch.state import JobRecord, StateStore
from ruxa_batch.statuses import JobStatus, StopReason
from ruxa_batch.timing import Timer
from ruxa_batch.tuning import Tuning
from ruxa_batch.uploaders import destination_for, require_destination
from ruxa_batch.uploads import (
    CREATE_SLACK,
    Destination,
    Publisher,
    renewal_margin,
    url_lifetime,
)

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


def check_base_url(url: str) -> str:
    """Refuse anything but https, or http to a loopback address, and credentials in the URL."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number
    except ValueError:
        parts = None
    if parts is not None and "@" in parts.netloc:
        # They would be stored in the state file and shown in messages; the URL is not echoed.
        raise UsageError(
            "the base URL contains credentials (user:password@); remove them: the API key "
            "comes from RUXA_API_KEY or --api-key-file"
        )
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = repr(url) if "@" not in url else "(not shown: it contains '@')"
        raise UsageError(f"invalid base URL {shown}: expected https://host")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UsageError(
            f"refusing plain http:// to {parts.hostname}: the API key would cross the network "
            "unencrypted; use https:// (http is allowed only for loopback addresses)"
        )
    return url.rstrip("/")


def read_api_key(flags: RunFlags) -> str:
    """The key from --api-key-file or RUXA_API_KEY; a clear error when there is none, or when
    it is not one line of printable ASCII (an HTTP header could not carry it)."""
    if flags.api_key_file is not None:
        try:
            key = flags.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UsageError(f"cannot read API key file {flags.api_key_file}: {reason}") from None
        except UnicodeDecodeError:
            raise UsageError(
                f"API key file {flags.api_key_file} is not UTF-8 text; it must hold only the key"
            ) from None
        if not key:
            raise UsageError(f"API key file {flags.api_key_file} is empty")
        return _checked_key(key, f"API key file {flags.api_key_file}")
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise UsageError(
            "no API key: set the RUXA_API_KEY environment variable or pass --api-key-file "
            "(or try the local sandbox with --sandbox)"
        )
    return _checked_key(key, API_KEY_ENV)


def _checked_key(key: str, source: str) -> str:
    """``key`` if it is one line of printable ASCII; the error never repeats it."""
    if "\n" in key or "\r" in key:
        problem = "holds more than one line"
    elif not key.isascii():
        problem = "contains a character that is not ASCII"
    elif not key.isprintable() or " " in key:
        problem = "contains a space or a control character"
    else:
        return key
    raise UsageError(f"{source} {problem}; it must hold only the key, on one line")


@contextmanager
def endpoint_for(flags: RunFlags, *, output_dir: Path | None = None) -> Iterator[Endpoint]:
    """The endpoint of this run; with --sandbox, a local sandbox serving for its duration,
    keeping its tasks in ``output_dir`` so that a resumed run finds them."""
    if flags.sandbox and flags.base_url:
        raise UsageError("--base-url and --sandbox exclude each other: choose one endpoint")
    if not flags.sandbox:
        base = check_base_url(flags.base_url or os.environ.get("RUXA_BASE_URL") or DEFAULT_BASE_URL)
        yield Endpoint(base, read_api_key(flags), base)
        return
    from ruxa_batch.sandbox import SandboxConfig, SandboxServer

    config = flags.sandbox_config or SandboxConfig()
    with SandboxServer(config, host="127.0.0.1", port=0, data_dir=output_dir) as server:
        yield Endpoint(server.base_url, server.api_key, SANDBOX_ENDPOINT)


def progress_mode(flags: RunFlags) -> str:
    """``bar`` on a terminal, ``log`` otherwise, ``off`` with --quiet or --no-progress."""
    if flags.quiet or flags.progress is False:
        return "off"
    if flags.progress is True:
        return "bar"
    return "bar" if sys.stderr.isatty() and _columns() > 0 else "log"


def _columns() -> int:
    """The terminal's width; 0 where it reports none (a bar would show nothing there)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 0


def run_batch(flags: RunFlags, *, redo: RedoRequest | None = None) -> int:
    """``ruxa-batch run``: submit, poll, download and record every job of a manifest.

    With ``redo`` (``ruxa-batch redo``), only the jobs it selects: a new take each.
    """
    whole = load_manifest(flags.path, max_jobs=flags.max_jobs)
    # A shard's run is a run of its jobs only: its cap, confirmation, results and report too.
    manifest = shard_manifest(whole, flags.shard)
    tuning = Tuning.resolve(manifest.run, flags.tuning)
    output_dir = output_dir_for(manifest.output.dir, sandbox=flags.sandbox)
    state_path = shard_state_path(output_dir, flags.state, flags.shard)
    if flags.state is None:
        check_folder(output_dir, flags.shard)
    if manifest.local_files():
        require_destination(manifest.upload, sandbox=flags.sandbox, base=manifest.base)
    with endpoint_for(flags, output_dir=output_dir) as endpoint:
        store = StateStore.open_for_run(state_path)
        try:
            claim_state(store, flags.shard, manifest_revision(whole))
            return _run_with_store(manifest, flags, tuning, output_dir, store, endpoint, redo)
        finally:
            store.close()


def _run_with_store(
    manifest: Manifest,
    flags: RunFlags,
    tuning: Tuning,
    output_dir: Path,
    store: StateStore,
    endpoint: Endpoint,
    redo: RedoRequest | None = None,
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
    # Under the lock: no other run of this state is downloading into the folder.
    remove_stale_partials(output_dir)
    decisions = flags.decisions.options(max_attempts=tuning.max_attempts)
    options = EngineOptions(
        output_dir=output_dir,
        decisions=decisions,
        poll_interval=tuning.poll_interval,
        task_timeout=tuning.task_timeout,
        max_download_bytes=int(tuning.max_download_mb * 1024 * 1024),
        backoff_base=tuning.retry_backoff,
        max_tasks=tuning.max_tasks,
        failure_rules=tuning.permanent_failures,
        window=window_size(rate_limit=tuning.rate_limit, concurrency=tuning.concurrency),
    )
    # The jobs this run drives: all of them, or those a redo selects (checked before anything
    # is recorded; the confirmation counts them as new jobs, which is what a new take costs).
    driving, planning, redo_plan = manifest, None, None
    if redo is not None:
        records = store.job_records()
        redo_plan = within_cap(select(manifest, records, redo), tuning.max_tasks)
        driving = driven(manifest, redo_plan)
        planning = planning_records(records, redo_plan)
        if not flags.quiet:
            emit(redo_summary(redo_plan), sys.stdout)
    # Where local pictures go, made now: missing credentials or tools stop the run before
    # the confirmation and before anything is sent.
    destination = None
    if driving.local_files():
        sandbox = endpoint.identity == SANDBOX_ENDPOINT
        destination = destination_for(
            manifest.upload,
            base=manifest.base,
            sandbox_url=endpoint.base_url.rstrip("/") + "/" if sandbox else None,
            sandbox_key=endpoint.api_key if sandbox else None,
            republish=flags.republish,
        )
    if not confirmed(driving, store, flags, tuning, output_dir, records=planning):
        emit(["not confirmed: nothing was sent"])
        return EXIT_INTERRUPTED
    if redo is not None and redo_plan is not None:
        # The redo's write-ahead record: committed before anything is sent.
        start_takes(redo_plan, store, output_dir, reason=redo.reason)
    store.start_run()
    progress = Progress(
        total=len(driving.jobs),
        mode=progress_mode(flags),
        verbose=flags.verbose,
        quiet=flags.quiet,
    )
    started = time.monotonic()
    requests = [0]
    try:
        outcome = asyncio.run(
            _drive(
                driving,
                store,
                endpoint,
                tuning,
                options,
                progress,
                requests,
                destination=destination,
            )
        )
    except (asyncio.CancelledError, KeyboardInterrupt):
        outcome = RunOutcome(
            tasks_created=store.tasks_created_this_run(), stopped_by=StopReason.INTERRUPTED
        )
    finally:
        progress.close()
    if outcome.stopped_by == StopReason.INTERRUPTED:
        _exit_on_next_signal()
    elapsed = time.monotonic() - started
    store.finish_run(outcome=outcome.stopped_by or "finished", tasks_created=outcome.tasks_created)
    table = build_table(
        manifest, store.records_of, store.takes(), tally=store.tally(job_keys(manifest.jobs))
    )
    summary = {
        **table.counts(),
        "jobs": len(table.rows),
        "possible_duplicates": table.possible_duplicates(),
        "tasks_created_this_run": outcome.tasks_created,
        "requests_sent_this_run": requests[0],
        "seconds": round(elapsed, 1),
        "stopped_by": outcome.stopped_by,
        "max_tasks": tuning.max_tasks,
        "files_published_this_run": outcome.files_published,
        "upload_bytes_sent_this_run": outcome.upload_bytes_sent,
    }
    shard = flags.shard
    names = (own_name("results.csv", shard), own_name("results.json", shard))
    report = []
    if flags.report:
        page = output_dir / own_name(REPORT_FILENAME, shard)
        make = report_writer(
            output_dir=output_dir,
            destination=page,
            history=store.history(),
            redo_flags=run_flags(sandbox=flags.sandbox, state=flags.state),
        )
        report.append((page, make))
    paths = write_results(table, output_dir, summary, names=names, also=report)
    if not flags.quiet:
        emit(_summary_lines(summary, paths, output_dir), sys.stdout)
    # How the run went is said of the jobs it drove: a redo is not unfinished because another
    # job of the manifest was never run.
    if driving is not manifest:
        keys = {job.key for job in driving.jobs}
        scope = Table(manifest, tuple(row for row in table.rows if row["key"] in keys))
        summary = {**summary, **scope.counts(), "jobs": len(scope.rows)}
    if flags.summary_json is not None:
        # Written before the exit is decided: a stop (401, 402, the cap) raises from there.
        code = EXIT_SOFTWARE if outcome.internal_errors else _ending(outcome, summary).code
        document = {**summary, "exit_code": code}
        write_atomic(flags.summary_json, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    if outcome.internal_errors:
        # The other jobs went on and the results are written; now report the bug.
        raise outcome.internal_errors[0]
    return _exit_code(outcome, summary)


async def _drive(
    manifest: Manifest,
    store: StateStore,
    endpoint: Endpoint,
    tuning: Tuning,
    options: EngineOptions,
    progress: Progress,
    requests: list[int],
    *,
    destination: Destination | None = None,
) -> RunOutcome:
    """Run the engine with a client that is closed however the run ends; Ctrl-C or SIGTERM
    halts it gracefully, a second one leaves at once."""
    timer = Timer()
    client = RuxaClient(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        concurrency=tuning.concurrency,
        limiter=RateLimiter(tuning.rate_limit, timer=timer),
    )
    publisher = None
    if destination is not None:
        spec = manifest.upload
        publisher = Publisher(
            destination,
            store,
            concurrency=spec.concurrency if spec else DEFAULT_UPLOAD_CONCURRENCY,
            margin=renewal_margin(
                task_timeout=tuning.task_timeout, url_lifetime=url_lifetime(spec)
            ),
            events=progress,
        )
        lifetime = url_lifetime(spec)
        if lifetime is not None and lifetime < tuning.task_timeout + CREATE_SLACK:
            progress.warn(
                f"upload.url_lifetime ({lifetime:g} s) is shorter than task_timeout plus "
                f"{CREATE_SLACK:g} s: a task that waits in the API's queue may find its input's "
                "URL expired"
            )
    async with client, contextlib.AsyncExitStack() as stack:
        if publisher is not None:
            stack.push_async_callback(publisher.aclose)
        engine = Engine(
            manifest, store, client, options, events=progress, timer=timer, publisher=publisher
        )
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
            engine.halt(StopReason.INTERRUPTED)

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows, threads
                pass
        progress.start()
        try:
            return await engine.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            requests[0] = client.requests


def _exit_on_next_signal() -> None:
    """After a first Ctrl-C, another one while the results are written leaves at once."""

    def leave(signum: int, frame: object) -> None:
        os._exit(EXIT_INTERRUPTED)  # the state is safe; results files are replaced atomically

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(sig, leave)


CONFIRM_ABOVE = 100  # tasks; a bigger run asks first when a person is at the terminal


def is_interactive() -> bool:
    """A person at a terminal (both standard input and output)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def confirmed(
    manifest: Manifest,
    store: StateStore,
    flags: RunFlags,
    tuning: Tuning,
    output_dir: Path,
    *,
    records: dict[str, JobRecord] | None = None,
) -> bool:
    """Ask before a run that may create more than CONFIRM_ABOVE tasks; never off a terminal.

    The figure is the plan's, from the same decisions the engine carries out (from ``records``
    when given: a redo's, as they will be once it is recorded).
    """
    if flags.yes or not is_interactive():
        return True
    planned = make_plan(
        manifest,
        records if records is not None else store.job_records(),
        flags.decisions.options(max_attempts=tuning.max_attempts),
        output_dir=output_dir,
    )
    cost = planned.estimate(prices=tuning.price_per_task, cap=tuning.max_tasks)
    if cost.expected <= CONFIRM_ABOVE:
        return True
    emit(cost.lines(), sys.stdout)
    answer = input("Continue? [y/N] ").strip().lower()
    return answer in ("y", "yes")


_SUMMARY_ORDER = (
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.UNCERTAIN,
    JobStatus.RUNNING,
    JobStatus.PENDING,
)


def _summary_lines(summary: Mapping[str, Any], paths: Sequence[Path], out: Path) -> list[str]:
    lines = [
        ", ".join(f"{summary[status]:,} {status}" for status in _SUMMARY_ORDER)
        + f" (of {summary['jobs']:,} jobs)",
        f"tasks created this run: {summary['tasks_created_this_run']:,}; possible duplicates: "
        f"{summary['possible_duplicates']:,}; time: {summary['seconds']:.1f} s",
        f"pictures: {display_path(out)}",
        *(f"{path.stem}: {display_path(path)}" for path in paths),
    ]
    if summary["files_published_this_run"]:
        sent = size_text(summary["upload_bytes_sent_this_run"])
        lines.insert(
            2,
            f"local pictures published this run: {summary['files_published_this_run']:,} "
            f"({sent} sent)",
        )
    return lines


@dataclass(frozen=True)
class _Ending:
    """How a run ends: its exit code, what to print, and the error to raise (if it stopped)."""

    code: int
    lines: tuple[str, ...] = ()
    error: StoppedEarly | None = None


def _ending(outcome: RunOutcome, summary: Mapping[str, Any]) -> _Ending:
    """The one place that turns how a run went into its exit code and closing words."""
    if outcome.stopped_by == StopReason.INTERRUPTED:
        return _Ending(
            EXIT_INTERRUPTED,
            ("interrupted: the state is saved; run the same command again to continue",),
        )
    if outcome.stopped_by == StopReason.AUTH:
        message = (
            "the API rejected the key (401); no job was marked failed. Check RUXA_API_KEY "
            "and run again to continue"
        )
        return _Ending(StoppedEarly.exit_code, error=StoppedEarly(message))
    if outcome.stopped_by == StopReason.MAX_TASKS:
        message = (
            f"stopped at the cap of {plural(summary['max_tasks'], 'task')} for this run "
            "(--max-tasks): "
            f"{outcome.not_submitted:,} jobs were not submitted; run again to continue with them"
        )
        return _Ending(StoppedEarly.exit_code, error=StoppedEarly(message))
    if outcome.stopped_by == StopReason.CREDITS:
        message = (
            f"the API reports insufficient credits (402): {outcome.not_submitted:,} jobs were not "
            "submitted; add credits and run the same command again to continue with them"
        )
        return _Ending(StoppedEarly.exit_code, error=StoppedEarly(message))
    failed = summary[JobStatus.FAILED]
    uncertain = summary[JobStatus.UNCERTAIN]
    unfinished = summary[JobStatus.PENDING] + summary[JobStatus.RUNNING]
    lines = []
    if failed:
        lines.append(
            f"{_jobs(failed)} failed; see the results file for each error, and rerun with "
            "--retry-failed to try them again"
        )
    if uncertain:
        lines.append(
            f"{_jobs(uncertain)} uncertain (a create's answer was lost); rerun with "
            "--retry-uncertain to submit them again"
        )
    if unfinished:
        lines.append(
            f"{_jobs(unfinished)} left for a later run (see the results file for each reason); "
            "run the same command again to continue"
        )
    return _Ending(exit_code_for_jobs(summary), tuple(lines))


def _exit_code(outcome: RunOutcome, summary: Mapping[str, Any]) -> int:
    """Print the closing words and return the exit code (or raise the stop's error)."""
    ending = _ending(outcome, summary)
    emit(list(ending.lines))
    if ending.error is not None:
        raise ending.error
    return ending.code


def _jobs(count: int) -> str:
    return f"{count:,} job{'' if count == 1 else 's'}"
