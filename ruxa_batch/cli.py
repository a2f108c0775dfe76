"""The command line: flags in, a frozen settings object to one core function, its exit code out.

Heavy modules (YAML, JSON Schema, HTTP) are imported inside the commands so that ``--help`` is fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from ruxa_batch import __version__
from ruxa_batch.errors import EXIT_INTERRUPTED, EXIT_INVALID, emit, run_guarded
from ruxa_batch.jobs import DEFAULT_MAX_JOBS
from ruxa_batch.sandbox.options import config_from_options, sandbox_options
from ruxa_batch.statuses import REDOABLE, JobStatus
from ruxa_batch.tuning import settings, tuning_options

F = TypeVar("F", bound=Callable[..., Any])


_max_jobs_option = click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_JOBS,
    show_default=True,
    help="Refuse manifests that expand to more jobs than this.",
)


_state_option = click.option(
    "--state",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="State file. [default: <output.dir>/.ruxa-batch.sqlite]",
)


def _parse_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from ruxa_batch.shards import parse_shard

    return None if value is None else parse_shard(value)


def _shard_option(what: str) -> Callable[[F], F]:
    """``--shard I/N``: only the jobs of shard I of N (1-based), with that shard's state file."""
    return click.option(
        "--shard",
        default=None,
        metavar="I/N",
        callback=_parse_shard,
        help=f"{what} only the jobs of shard I of N (1-based; a job's shard is fixed by a hash "
        "of its request), with the shard's own state file "
        "<output.dir>/.ruxa-batch.shard-I-of-N.sqlite.",
    )


_sandbox_state_option = click.option(
    "--sandbox",
    is_flag=True,
    help="Read the state of the sandbox runs (kept apart in <output.dir>.sandbox).",
)


def _decision_options(command: F) -> F:
    """The flags that change what happens to each job; `run` and `plan` take the same ones."""
    for option in reversed(
        [
            click.option(
                "--retry-failed",
                is_flag=True,
                help="Resubmit jobs that failed in earlier runs (with a fresh set of attempts).",
            ),
            click.option(
                "--at-most-once",
                is_flag=True,
                help="Never resubmit a create whose answer was lost; mark the job uncertain.",
            ),
            click.option(
                "--retry-uncertain",
                is_flag=True,
                help="Resubmit uncertain jobs (each is flagged as a possible duplicate).",
            ),
            click.option(
                "--no-download",
                is_flag=True,
                help="Record result URLs without downloading the pictures.",
            ),
        ]
    ):
        command = option(command)
    return command


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its options under headings instead of one long list.

    ``sections`` maps a heading to the parameter names under it; a name ending in ``*`` takes
    every parameter starting with the rest. Parameters no section names (``--help``) come last.
    """

    def __init__(self, *args: Any, sections: Sequence[tuple[str, Sequence[str]]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sections = sections

    def _section_of(self, name: str) -> str:
        for heading, names in self.sections:
            for pattern in names:
                if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])):
                    return heading
        return "Other options"

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        grouped: dict[str, list[tuple[str, str]]] = {heading: [] for heading, _ in self.sections}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                grouped.setdefault(self._section_of(param.name or ""), []).append(record)
        for heading, records in grouped.items():
            if records:
                with formatter.section(heading):
                    formatter.write_dl(records)


_RUN_SECTIONS = (
    (
        "Run options",
        (
            "base_url",
            "api_key_file",
            "state",
            "concurrency",
            "rate_limit",
            "poll_interval",
            "task_timeout",
            "max_download_mb",
            "max_jobs",
            "no_download",
            "republish",
            "shard",
        ),
    ),
    (
        "Retries and cost",
        (
            "max_attempts",
            "retry_backoff",
            "retry_failed",
            "retry_uncertain",
            "at_most_once",
            "price_per_task",
            "max_tasks",
            "yes",
        ),
    ),
    ("Output", ("quiet", "verbose", "progress", "report", "summary_json")),
    ("Sandbox (no account, no cost)", ("sandbox", "sandbox_*")),
)


def _split_flags(flags: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Take the decision flags and the tuning settings out of a command's keyword arguments."""
    from ruxa_batch.decide import DecisionFlags

    decisions = DecisionFlags(
        retry_failed=flags.pop("retry_failed"),
        retry_uncertain=flags.pop("retry_uncertain"),
        at_most_once=flags.pop("at_most_once"),
        download=not flags.pop("no_download"),
    )
    tuning = {
        setting.name: flags.pop(setting.name) for setting in settings() if setting.name in flags
    }
    return decisions, tuning


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ruxa-batch")
def cli() -> None:
    """Run large, resumable batches of AI image edits on the Ruxa API from a YAML manifest.

    \b
    Start here:
      ruxa-batch init manifest.yaml         write a commented starter manifest
      ruxa-batch validate manifest.yaml     check it, with errors that point at lines
      ruxa-batch plan manifest.yaml         see every job it expands to
      ruxa-batch run manifest.yaml --sandbox   try it on a local sandbox of the API
    """


@cli.command(short_help="Check manifests, with errors that point at lines.")
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path))
@_max_jobs_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing for valid manifests.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one document with status, errors (filename, line, column, path, message) "
    "and checked_paths.",
)
@click.option(
    "--only-manifests",
    is_flag=True,
    help="Skip YAML files without top-level version and jobs keys; for a CSV file, check the "
    "manifests under the current folder that read it (the pre-commit hook).",
)
def validate(
    manifests: tuple[Path, ...], max_jobs: int, quiet: bool, fmt: str, only_manifests: bool
) -> int:
    """Check manifests against the schema and the manifest rules.

    Every problem in every file is reported at once, as FILE:LINE:COL: JSON.PATH: MESSAGE.
    Exit status 0 when all are valid, 2 otherwise.

    \b
    Example:
      ruxa-batch validate manifests/*.yaml
    """
    from ruxa_batch import app
    from ruxa_batch.settings import ValidateSettings

    return app.validate(
        ValidateSettings(
            paths=manifests,
            max_jobs=max_jobs,
            quiet=quiet,
            format=fmt,
            only_manifests=only_manifests,
        )
    )


@cli.command(short_help="Show every job and what `run` would do with it.")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="markdown is meant to be pasted into a pull request.",
)
@_max_jobs_option
@_state_option
@_sandbox_state_option
@_shard_option("Plan")
@click.option(
    "--shards",
    type=click.IntRange(min=1, max=10_000),
    default=None,
    metavar="N",
    help="Show the split into N shards: each shard's jobs, tasks and cost (from its state file).",
)
@tuning_options(only=("max_attempts", "price_per_task", "max_tasks"))
@_decision_options
def plan(
    manifest: Path,
    fmt: str,
    max_jobs: int,
    state: Path | None,
    sandbox: bool,
    shard: Any,
    shards: int | None,
    **flags: Any,
) -> int:
    """Show every job the manifest expands to and what `run` would do with it.

    Give it the flags you will give `run` (--retry-failed, --max-attempts...): the actions,
    the task count and the cost are decided by the same rules. Needs no network and no API key.

    \b
    Example:
      ruxa-batch plan manifests/example.yaml --format markdown > plan.md
      ruxa-batch plan manifests/example.yaml --shards 4      # the split, shard by shard
      ruxa-batch plan manifests/example.yaml --shard 2/4     # what `run --shard 2/4` does
    """
    from ruxa_batch import app
    from ruxa_batch.errors import UsageError
    from ruxa_batch.settings import PlanSettings

    if shard is not None and shards is not None:
        raise UsageError("--shard and --shards exclude each other: plan one shard, or the split")
    if state is not None and shards is not None:
        raise UsageError("--shards reads each shard's own state file: leave out --state")
    decisions, tuning = _split_flags(flags)
    return app.plan(
        PlanSettings(
            path=manifest,
            format=fmt,
            max_jobs=max_jobs,
            state=state,
            sandbox=sandbox,
            tuning=tuning,
            decisions=decisions,
            shard=shard,
            shards=shards,
        )
    )


def _run_options(command: F) -> F:
    """The options of `run`, which `redo` takes too (it is a run of the jobs it selects)."""
    for option in reversed(
        [
            click.option(
                "--base-url",
                default=None,
                help="API base URL. [default: $RUXA_BASE_URL, else https://api.ruxa.ai]",
            ),
            click.option(
                "--api-key-file",
                type=click.Path(path_type=Path, dir_okay=False),
                default=None,
                help="Read the API key from this file instead of $RUXA_API_KEY.",
            ),
            _state_option,
            _shard_option("Run"),
            tuning_options(),
            click.option(
                "-y", "--yes", is_flag=True, help="Do not ask before creating more than 100 tasks."
            ),
            _decision_options,
            _max_jobs_option,
            click.option(
                "--republish",
                is_flag=True,
                help="Publish every local picture again instead of reusing the URLs earlier "
                "runs recorded (after the uploaded copies were deleted).",
            ),
            click.option(
                "--sandbox",
                is_flag=True,
                help="Run against a local sandbox of the API: no account, no cost, fake pictures.",
            ),
            click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors."),
            click.option(
                "-v",
                "--verbose",
                is_flag=True,
                help="Print every task created and every job finished.",
            ),
            click.option(
                "--report/--no-report",
                default=True,
                show_default=True,
                help="Write <output.dir>/report.html, the contact sheet of inputs and outputs, "
                "at the end.",
            ),
            click.option(
                "--summary-json",
                type=click.Path(path_type=Path, dir_okay=False),
                default=None,
                metavar="FILE",
                help="Write the end-of-run counts, exit_code and stopped_by to FILE as one JSON "
                "document (also when the run stops early).",
            ),
            sandbox_options(prefix="sandbox"),
            click.option(
                "--progress/--no-progress",
                default=None,
                help="Force the progress bar on or off. "
                "[default: a bar on a terminal, log lines otherwise]",
            ),
        ]
    ):
        command = option(command)
    return command


@cli.command(
    cls=SectionedCommand,
    sections=_RUN_SECTIONS,
    short_help="Submit, poll and download every job; resumable.",
)
@click.argument("manifest", type=click.Path(path_type=Path))
@_run_options
def run(manifest: Path, **flags: Any) -> int:
    """Submit, poll and download every job of MANIFEST; resume where the last run stopped.

    Safe to stop at any moment (Ctrl-C, kill, a lost network, an empty credit balance): run
    the same command again and it continues, never paying twice for a job that has a task.

    \b
    Example:
      export RUXA_API_KEY=sk-...
      ruxa-batch run manifests/example.yaml
      ruxa-batch run manifests/example.yaml --sandbox     # try it locally, no account
    """
    from ruxa_batch import app

    return app.run(_run_flags(manifest, flags))


def _run_flags(manifest: Path, flags: dict[str, Any]) -> Any:
    """The frozen settings of `run` (and of `redo`, which is a run of the jobs it selects)."""
    from ruxa_batch.errors import UsageError
    from ruxa_batch.settings import RunFlags

    options = {name: value for name, value in flags.items() if not name.startswith("sandbox_")}
    sandbox = config_from_options(prefix="sandbox", **flags)
    if sandbox.faults() and not options["sandbox"]:
        raise UsageError("the --sandbox-... flags need --sandbox")
    decisions, tuning = _split_flags(options)
    return RunFlags(
        path=manifest,
        sandbox_config=sandbox,
        tuning=tuning,
        decisions=decisions,
        **options,
    )


@cli.command(
    cls=SectionedCommand,
    sections=(("Selection", ("status", "from_file", "again", "reason")), *_RUN_SECTIONS),
    short_help="Make chosen jobs again: a new take each, the earlier ones kept.",
)
@click.argument("manifest", type=click.Path(path_type=Path))
@click.argument("selectors", nargs=-1)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([str(status) for status in REDOABLE]),
    help="Every job with this status (repeat for several).",
)
@click.option(
    "--from",
    "from_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE",
    help="Selectors one per line (the report's download of a selection).",
)
@click.option("--reason", default=None, help="Why, kept in the state with the earlier take.")
@click.option("--again", is_flag=True, help="Give a job that was already redone one more take.")
@_run_options
def redo(
    manifest: Path,
    selectors: tuple[str, ...],
    statuses: tuple[str, ...],
    from_file: Path | None,
    reason: str | None,
    again: bool,
    **flags: Any,
) -> int:
    """Make the jobs of MANIFEST that SELECTORS name again: one new task each, the others
    untouched, the earlier pictures kept in <output.dir>/history/take-N/.

    A selector is a job id, id@variant, or a shell-style glob over ids ('mug-*'). The request
    is recorded before anything is sent: a redo stopped at any moment continues with the next
    run or redo, and a job already redone needs --again for one more take.

    \b
    Examples:
      ruxa-batch redo manifests/example.yaml mug-ember-knitted-wool-blanket --sandbox
      ruxa-batch redo manifests/example.yaml 'hero-*' --reason "too dark"
      ruxa-batch redo manifests/example.yaml --status failed
      ruxa-batch redo manifests/example.yaml --from redo-autumn-catalog.txt
    """
    from ruxa_batch import app
    from ruxa_batch.redo import RedoRequest

    request = RedoRequest(
        selectors=selectors,
        statuses=tuple(JobStatus(status) for status in statuses),
        from_file=from_file,
        reason=reason,
        again=again,
    )
    return app.redo(_run_flags(manifest, flags), request)


@cli.command(short_help="Count the jobs in each status, from the state file.")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 0 only when every job succeeded: 1 when some failed or are uncertain, "
    "4 when some are pending or running.",
)
@_state_option
@_shard_option("Count")
@_sandbox_state_option
@_max_jobs_option
def status(
    manifest: Path,
    fmt: str,
    check: bool,
    state: Path | None,
    shard: Any,
    sandbox: bool,
    max_jobs: int,
) -> int:
    """Show how many jobs are in each status and which are not done, from the state file.

    Needs no network and no API key. With --check the exit status says whether the batch is
    done (0), has failures (1) or has jobs still to run (4), as `run` would exit.

    \b
    Example:
      ruxa-batch status manifests/example.yaml --format json
    """
    from ruxa_batch import app
    from ruxa_batch.settings import StatusSettings

    return app.status(
        StatusSettings(
            path=manifest,
            format=fmt,
            check=check,
            state=state,
            max_jobs=max_jobs,
            sandbox=sandbox,
            shard=shard,
        )
    )


@cli.command(short_help="Print the results table, one row per job.")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write to this file instead of standard output.",
)
@click.option(
    "--all-takes",
    is_flag=True,
    help="A row for every take of a redone job (column take), not only the current one.",
)
@_state_option
@_shard_option("List")
@_sandbox_state_option
@_max_jobs_option
def results(
    manifest: Path,
    fmt: str,
    output: Path | None,
    all_takes: bool,
    state: Path | None,
    shard: Any,
    sandbox: bool,
    max_jobs: int,
) -> int:
    """Print the results table (one row per job), from the state file alone.

    \b
    Example:
      ruxa-batch results manifests/example.yaml --format json -o results.json
    """
    from ruxa_batch import app
    from ruxa_batch.settings import ResultsSettings

    return app.results(
        ResultsSettings(
            path=manifest,
            format=fmt,
            output=output,
            state=state,
            max_jobs=max_jobs,
            sandbox=sandbox,
            all_takes=all_takes,
            shard=shard,
        )
    )


@cli.command(short_help="Check that downloaded pictures are unchanged.")
@click.argument("manifest", type=click.Path(path_type=Path))
@_state_option
@_sandbox_state_option
@_max_jobs_option
def verify(manifest: Path, state: Path | None, sandbox: bool, max_jobs: int) -> int:
    """Check that every succeeded job's pictures are still the ones downloaded for it.

    Re-hashes each file against the sha256 in the state file and lists every missing or
    changed file with its job. Exit status 0 when all match, 1 otherwise. No network.

    \b
    Example:
      ruxa-batch verify manifests/example.yaml
    """
    from ruxa_batch import app
    from ruxa_batch.settings import VerifySettings

    return app.verify(
        VerifySettings(path=manifest, state=state, max_jobs=max_jobs, sandbox=sandbox)
    )


@cli.command(short_help="Serve a local stand-in of the API, with fault injection.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True)
@click.option(
    "--data",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    metavar="DIR",
    help="Keep tasks and counters in DIR/sandbox.sqlite, so a restarted sandbox still knows "
    "them. [default: in memory only]",
)
@sandbox_options
def sandbox(host: str, port: int, data: Path | None, **faults: Any) -> int:
    """Serve a local stand-in of the Ruxa API, with fault injection, in the foreground.

    It prints its base URL and the key it accepts; point a run at it with --base-url and
    RUXA_API_KEY. Listens on loopback unless --host says otherwise.

    \b
    Example:
      ruxa-batch sandbox --port 8787 --fail-rate 0.1 --rate-limit 20 --data sandbox-data
    """
    from ruxa_batch.sandbox import serve

    return serve(config_from_options(**faults), host=host, port=port, data_dir=data)


@cli.command(short_help="Write an HTML contact sheet of inputs and outputs.")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the page. [default: <output.dir>/report.html]",
)
@click.option("--open", "open_", is_flag=True, help="Open the page in a browser.")
@click.option(
    "--embed", is_flag=True, help="Put the output pictures inside the file (up to 1 MB each)."
)
@_state_option
@_shard_option("Show")
@_sandbox_state_option
@_max_jobs_option
def report(
    manifest: Path,
    output: Path | None,
    open_: bool,
    embed: bool,
    state: Path | None,
    shard: Any,
    sandbox: bool,
    max_jobs: int,
) -> int:
    """Write an HTML contact sheet: every job's inputs beside its outputs, with filters.

    One self-contained file that works offline; from the state file and the downloaded pictures.

    \b
    Example:
      ruxa-batch report manifests/example.yaml --open
    """
    from ruxa_batch import app
    from ruxa_batch.settings import ReportSettings

    return app.report(
        ReportSettings(
            path=manifest,
            output=output,
            open=open_,
            embed=embed,
            state=state,
            max_jobs=max_jobs,
            sandbox=sandbox,
            shard=shard,
        )
    )


@cli.command(short_help="Combine the output folders of shard runs into one.")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.argument(
    "folders", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False)
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    metavar="DIR",
    help="The merged output folder: absent, empty, or holding no state file. "
    "[default: the manifest's output.dir]",
)
@click.option(
    "--partial",
    is_flag=True,
    help="Merge although some shards are missing; their jobs stay pending (a later `run` "
    "makes them).",
)
@click.option(
    "--sandbox",
    is_flag=True,
    help="The shards ran with --sandbox: the default output is <output.dir>.sandbox.",
)
@click.option(
    "--report/--no-report", default=True, show_default=True, help="Write report.html too."
)
@_max_jobs_option
def merge(
    manifest: Path,
    folders: tuple[Path, ...],
    output: Path | None,
    partial: bool,
    sandbox: bool,
    report: bool,
    max_jobs: int,
) -> int:
    """Combine the output folders of `run --shard I/N` runs (FOLDERS) into one output folder
    with one state file, results.csv, results.json and report.html.

    Each folder holds the state file of one or more shards (.ruxa-batch.shard-I-of-N.sqlite)
    and their pictures. Every shard of the split must be there, once, run with the manifest as
    it is now (its revision); --partial merges without the missing ones. Every job's record
    (attempts, tasks, earlier takes) and picture is copied; the shard folders are only read.
    The merged folder is an ordinary output folder: `run` without --shard continues from it.

    \b
    Example:
      ruxa-batch merge manifests/example.yaml shards/shard-*/ -o out/autumn-catalog
    """
    from ruxa_batch import app
    from ruxa_batch.settings import MergeSettings

    return app.merge(
        MergeSettings(
            path=manifest,
            folders=folders,
            output=output,
            partial=partial,
            sandbox=sandbox,
            max_jobs=max_jobs,
            report=report,
        )
    )


@cli.command(short_help="Print the manifest's JSON Schema.")
def schema() -> int:
    """Print the manifest's JSON Schema (draft 2020-12).

    \b
    Example:
      ruxa-batch schema > manifest.schema.json
    """
    from ruxa_batch import app

    return app.print_schema()


@cli.command(short_help="Write a commented starter manifest.")
@click.argument("path", required=False, default="manifest.yaml", type=click.Path(path_type=Path))
def init(path: Path) -> int:
    """Write a commented starter manifest to PATH (default manifest.yaml).

    Never overwrites an existing file.

    \b
    Example:
      ruxa-batch init manifests/spring.yaml
    """
    from ruxa_batch import app
    from ruxa_batch.settings import InitSettings

    return app.init(InitSettings(path=path))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ruxa-batch`` command; returns the process exit code."""

    def body() -> int:
        try:
            result = cli.main(
                args=list(argv) if argv is not None else None,
                prog_name="ruxa-batch",
                standalone_mode=False,
            )
        except click.exceptions.Abort:
            emit(["interrupted"])
            return EXIT_INTERRUPTED
        except click.ClickException as exc:
            exc.show()
            return EXIT_INVALID
        return result if isinstance(result, int) else 0

    return run_guarded(body)
