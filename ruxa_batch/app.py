"""The core functions behind each command: settings in, exit code out.

The command-line layer (:mod:`ruxa_batch.cli`) only turns flags into settings and calls these.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from ruxa_batch.errors import (
    EXIT_INVALID,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    EnvironmentProblem,
    Problem,
    UsageError,
    emit,
    exit_code_for_jobs,
)
from ruxa_batch.jobs import Manifest, display_path, output_dir_for
from ruxa_batch.manifest import check_manifest, load_manifest
from ruxa_batch.pictures import FileCheck, check_file, pictures_of
from ruxa_batch.plan import Scope, ShardShare, make_plan, render
from ruxa_batch.redo import RedoRequest
from ruxa_batch.report import REPORT_FILENAME, run_flags, write_report
from ruxa_batch.results import build_table, every_take, to_csv, to_json, write_atomic
from ruxa_batch.schema import schema_text
from ruxa_batch.settings import (
    InitSettings,
    MergeSettings,
    PlanSettings,
    ReportSettings,
    ResultsSettings,
    RunFlags,
    StatusSettings,
    ValidateSettings,
    VerifySettings,
)
from ruxa_batch.shards import (
    Shard,
    manifest_revision,
    own_name,
    shard_manifest,
    shard_states,
    split,
)
from ruxa_batch.shards import state_path as shard_state_path
from ruxa_batch.state import JobRecord, Mark, StateStore, TakeRecord, state_path_for
from ruxa_batch.statuses import JOB_STATUSES, CheckStatus, JobStatus
from ruxa_batch.template import slugify
from ruxa_batch.tuning import Tuning

# Unfinished jobs `status` lists by name; the counts cover the rest.
STATUS_SHOWN = 10


def plural(count: int, noun: str) -> str:
    """``1 job``, ``2 jobs``, ``12,000 jobs``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def refuse_csv(path: Path) -> None:
    """A CSV file given where a manifest belongs: say what a manifest does with it."""
    if path.suffix.lower() == ".csv":
        raise UsageError(
            f"{display_path(path)} is a CSV file, not a manifest; a manifest lists it under rows:"
        )


def _load(
    path: Path, *, max_jobs: int, shard: Shard | None = None, packed: bool = True
) -> Manifest:
    """The manifest, or the part of it that ``shard`` runs."""
    refuse_csv(path)
    return shard_manifest(load_manifest(path, max_jobs=max_jobs, packed=packed), shard)


def validate(settings: ValidateSettings) -> int:
    """Check every manifest, reporting every problem in every file; 0 if all are valid.

    With ``only_manifests`` (the pre-commit hook), YAML files that are not manifests are
    skipped and a CSV file stands for the manifests under the current folder that read it.
    """
    paths = list(settings.paths)
    if settings.only_manifests:
        from ruxa_batch.manifest_discovery import manifests_to_check

        paths = manifests_to_check(paths, root=Path("."))
    checked: list[tuple[Path, Manifest | None, list[Problem]]] = []
    for path in paths:
        if path.suffix.lower() == ".csv":
            try:
                refuse_csv(path)
            except UsageError as exc:
                checked.append((path, None, [Problem(display_path(path), 0, 0, "$", exc.message)]))
            continue
        checked.append((path, *check_manifest(path, max_jobs=settings.max_jobs)))
    failed = sum(1 for _, _, problems in checked if problems)
    if settings.format == "json":
        document = {
            "status": CheckStatus.FAIL if failed else CheckStatus.OK,
            "errors": [
                {
                    "filename": problem.file,
                    "line": problem.line,
                    "column": problem.col,
                    "path": problem.path,
                    "message": problem.message,
                }
                for _, _, problems in checked
                for problem in problems
            ],
            "checked_paths": [display_path(path) for path, _, _ in checked],
        }
        emit([json.dumps(document, indent=2, ensure_ascii=False)], sys.stdout)
        return EXIT_INVALID if failed else EXIT_OK
    for path, manifest, problems in checked:
        if problems:
            emit([str(problem) for problem in problems])
        elif manifest is not None and not settings.quiet:
            emit([f"{display_path(path)}: ok, {plural(len(manifest.jobs), 'job')}"], sys.stdout)
    if failed and len(checked) > 1:
        emit([f"{failed} of {len(checked)} manifests are invalid"])
    return EXIT_INVALID if failed else EXIT_OK


def _records(
    manifest: Manifest,
    state: Path | None,
    *,
    sandbox: bool,
    needed_for: str | None = None,
    shard: Shard | None = None,
) -> dict[str, JobRecord]:
    """The recorded jobs of a manifest's state file (none if it does not exist yet)."""
    return _read_state(manifest, state, sandbox=sandbox, needed_for=needed_for, shard=shard)[0]


def _read_state(
    manifest: Manifest,
    state: Path | None,
    *,
    sandbox: bool,
    needed_for: str | None = None,
    shard: Shard | None = None,
) -> tuple[dict[str, JobRecord], dict[str, Any], dict[str, list[TakeRecord]]]:
    """The recorded jobs, the run history and the earlier takes of a manifest's state file
    (empty when there is none and ``needed_for`` is None: see :func:`_state_store`)."""
    store = _state_store(manifest, state, sandbox=sandbox, needed_for=needed_for, shard=shard)
    if store is None:
        return {}, {}, {}
    with store:
        return store.job_records(), store.history(), store.takes()


def _state_store(
    manifest: Manifest,
    state: Path | None,
    *,
    sandbox: bool,
    needed_for: str | None = None,
    shard: Shard | None = None,
) -> StateStore | None:
    """A manifest's state file opened to read (None when it holds nothing yet).

    No state file: None for ``plan`` (nothing has run yet), an error for the commands that
    only read the state (``needed_for`` says what for): a made-up table of pending jobs, or a
    report of one, would be a silent wrong answer.
    """
    path = shard_state_path(output_dir_for(manifest.output.dir, sandbox=sandbox), state, shard)
    if not path.exists():
        if needed_for is None:
            return None
        hint = _elsewhere(manifest, state, sandbox=sandbox)
        if state is None and shard is None:
            shards = shard_states(path.parent)
            if shards:
                named = ", ".join(str(found) for found in shards)
                hint = (
                    f"; the folder holds the state of shards {named}: add --shard I/N, or "
                    "combine them with `ruxa-batch merge`"
                )
        raise UsageError(f"no state file at {display_path(path)}: {needed_for}{hint}")
    store = StateStore(path, readonly=True)
    if not store.schema_version():
        store.close()
        return None
    return store


def _elsewhere(manifest: Manifest, state: Path | None, *, sandbox: bool) -> str:
    """A hint when the other kind of run (sandbox or real) has a state file for the manifest."""
    if state is not None:
        return ""
    other = state_path_for(output_dir_for(manifest.output.dir, sandbox=not sandbox), None)
    if not other.exists():
        return "; run the manifest first"
    if sandbox:
        return f"; the state of real runs is at {display_path(other)} (leave out --sandbox)"
    return f"; a sandbox run's state is at {display_path(other)}: add --sandbox to read it"


def report(settings: ReportSettings) -> int:
    """Write the HTML contact sheet of a manifest's jobs, from the state and the pictures."""
    manifest = _load(settings.path, max_jobs=settings.max_jobs, shard=settings.shard)
    records, history, takes = _read_state(
        manifest,
        settings.state,
        sandbox=settings.sandbox,
        needed_for="nothing to report",
        shard=settings.shard,
    )
    output_dir = output_dir_for(manifest.output.dir, sandbox=settings.sandbox)
    destination = settings.output or output_dir / own_name(REPORT_FILENAME, settings.shard)
    try:
        write_report(
            build_table(manifest, records, takes),
            output_dir=output_dir,
            destination=destination,
            history=history,
            embed=settings.embed,
            redo_flags=run_flags(sandbox=settings.sandbox, state=settings.state),
        )
    except EnvironmentProblem as exc:
        raise EnvironmentProblem(f"{exc.message} (-o FILE writes it elsewhere)") from None
    emit([f"wrote {display_path(destination)}"], sys.stdout)
    if settings.open:
        import webbrowser

        webbrowser.open(destination.resolve().as_uri())
    return EXIT_OK


def plan(settings: PlanSettings) -> int:
    """Print what ``run`` with the same flags would do with each job of the manifest."""
    # Planned once and gone: the jobs as they are made, not packed (see load_manifest).
    whole = _load(settings.path, max_jobs=settings.max_jobs, packed=False)
    manifest = shard_manifest(whole, settings.shard)
    output_dir = output_dir_for(manifest.output.dir, sandbox=settings.sandbox)
    tuning = Tuning.resolve(manifest.run, settings.tuning)
    options = settings.decisions.options(max_attempts=tuning.max_attempts)
    scope = None
    if settings.shards is not None:
        # Each shard planned against its own state file, as its run will be; the whole plan
        # against all of them together.
        records: dict[str, JobRecord] = {}
        shares = []
        for index, part in enumerate(split(manifest, settings.shards), start=1):
            shard = Shard(index, settings.shards)
            found = _records(part, None, sandbox=settings.sandbox, shard=shard)
            records.update(found)
            share = make_plan(part, found, options, output_dir=output_dir)
            cost = share.estimate(prices=tuning.price_per_task, cap=tuning.max_tasks)
            shares.append(ShardShare(shard, len(part.jobs), cost))
        scope = Scope(len(whole.jobs), manifest_revision(whole), shares=tuple(shares))
        cap = None  # the cap is per run, so per shard: each share shows its own
    else:
        records = _records(manifest, settings.state, sandbox=settings.sandbox, shard=settings.shard)
        if settings.shard is not None:
            scope = Scope(
                len(whole.jobs),
                manifest_revision(whole),
                jobs=len(manifest.jobs),
                shard=settings.shard,
            )
        cap = tuning.max_tasks
    planned = make_plan(manifest, records, options, output_dir=output_dir)
    cost = planned.estimate(prices=tuning.price_per_task, cap=cap)
    emit([render(planned, settings.format, cost, scope)], sys.stdout)
    if not records and settings.state is None and settings.shard is None and scope is None:
        other = state_path_for(output_dir_for(manifest.output.dir, sandbox=not settings.sandbox))
        if other.exists():
            # Not an error (a plan before the first run is normal), but a likely slip.
            flag = "without --sandbox" if settings.sandbox else "with --sandbox"
            emit(
                [
                    f"note: this plan is for a first run; {display_path(other)} holds the "
                    f"state of the runs {flag}"
                ]
            )
        shards = shard_states(output_dir)
        if shards:
            # `run` without --shard refuses here (it would pay again for the shards' jobs).
            listed = ", ".join(str(shard) for shard in shards)
            emit(
                [
                    f"note: {display_path(output_dir)} holds the states of shards {listed}: "
                    "plan with --shard I/N or --shards N, or merge them first"
                ]
            )
    return EXIT_OK


def run(flags: RunFlags) -> int:
    """Run the manifest's jobs (see :mod:`ruxa_batch.runner`)."""
    from ruxa_batch.runner import run_batch

    refuse_csv(flags.path)
    return run_batch(flags)


def merge(settings: MergeSettings) -> int:
    """Combine shard output folders into one (see :mod:`ruxa_batch.merge`)."""
    from ruxa_batch.merge import merge_shards

    refuse_csv(settings.path)
    return merge_shards(settings)


def redo(flags: RunFlags, request: RedoRequest) -> int:
    """Make the selected jobs again (see :mod:`ruxa_batch.redo`)."""
    from ruxa_batch.runner import run_batch

    refuse_csv(flags.path)
    return run_batch(flags, redo=request)


def status(settings: StatusSettings) -> int:
    """Counts per status and the jobs that are not done, from the state file alone."""
    # Read once and gone: the jobs as they are made (see load_manifest).
    whole = _load(settings.path, max_jobs=settings.max_jobs, shard=settings.shard, packed=False)
    store = _state_store(
        whole,
        settings.state,
        sandbox=settings.sandbox,
        needed_for="no job has run yet",
        shard=settings.shard,
    )
    # The counts from one grouped query per chunk; whole records only of the jobs not done.
    keys = [job.key for job in whole.jobs]
    if store is None:
        tally: tuple[dict[JobStatus, int], int] = ({JobStatus.PENDING: len(keys)}, 0)
        marks: dict[str, Mark] = {}
        records: dict[str, JobRecord] = {}
    else:
        with store:
            tally = store.tally(keys)
            marks = store.marks_of(keys)
            unfinished = [
                key for key in keys if key not in marks or marks[key].status != JobStatus.SUCCEEDED
            ]
            records = store.records_of(unfinished)
    counts = {status.value: tally[0].get(status, 0) for status in JOB_STATUSES}
    manifest = replace(
        whole,
        jobs=[
            job
            for job in whole.jobs
            if job.key not in marks or marks[job.key].status != JobStatus.SUCCEEDED
        ],
    )
    not_done = list(build_table(manifest, records).rows)
    table = build_table(whole, {}, tally=tally)  # its counts, and its number of jobs
    if settings.format == "json":
        document = {
            "name": manifest.name,
            "manifest": display_path(manifest.path),
            "counts": counts,
            "possible_duplicates": table.possible_duplicates(),
            "not_done": [
                {key: row[key] for key in ("id", "variant", "status", "task_id", "error", "key")}
                for row in not_done
            ],
        }
        emit([json.dumps(document, indent=2, ensure_ascii=False)], sys.stdout)
        return exit_code_for_jobs(counts) if settings.check else EXIT_OK
    lines = [
        f"{manifest.name}: {plural(len(table.rows), 'job')}: "
        + ", ".join(f"{count:,} {name}" for name, count in counts.items())
        + f"; possible duplicates: {table.possible_duplicates():,}"
    ]
    if not_done:
        lines.append("not done:")
        for row in not_done[:STATUS_SHOWN]:
            error = f"  {row['error']}" if row["error"] else ""
            lines.append(f"  {row['status']:<9} {row['id']} (variant {row['variant']}){error}")
        if len(not_done) > STATUS_SHOWN:
            more = len(not_done) - STATUS_SHOWN
            lines.append(
                f"  ... and {more:,} more (`ruxa-batch results` or `status --format json` "
                "list every job)"
            )
    emit(lines, sys.stdout)
    return exit_code_for_jobs(counts) if settings.check else EXIT_OK


def results(settings: ResultsSettings) -> int:
    """Print or write the results table, from the state file alone."""
    manifest = _load(settings.path, max_jobs=settings.max_jobs, shard=settings.shard)
    records, _history, takes = _read_state(
        manifest,
        settings.state,
        sandbox=settings.sandbox,
        needed_for="no results yet",
        shard=settings.shard,
    )
    table = build_table(manifest, records, takes)
    if settings.all_takes:
        table = every_take(table)
    summary = {**table.counts(), "jobs": len(table.rows)}
    text = to_json(table, summary) if settings.format == "json" else to_csv(table)
    if settings.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    write_atomic(settings.output, text)
    emit([f"wrote {settings.output}"], sys.stdout)
    return EXIT_OK


def verify(settings: VerifySettings) -> int:
    """Re-hash every succeeded job's pictures against the state file; 0 when all match.

    Lists each missing or changed file with its job, then exits 1. No network.
    """
    manifest = _load(settings.path, max_jobs=settings.max_jobs)
    output_dir = output_dir_for(manifest.output.dir, sandbox=settings.sandbox)
    records, _history, takes = _read_state(
        manifest, settings.state, sandbox=settings.sandbox, needed_for="nothing to verify"
    )
    lines: list[str] = []
    found: Counter[FileCheck] = Counter()
    jobs = 0
    for job in manifest.jobs:
        record = records.get(job.key)
        variant = f" variant {job.variant}" if job.variants > 1 else ""
        # The pictures of earlier takes (a redo's) are kept too, and checked alike.
        for take in takes.get(job.key, ()):
            for name, sha256 in zip(take.files, take.sha256, strict=False):
                file = output_dir / name
                result = check_file(file, sha256, None)
                found[result] += 1
                if result != FileCheck.OK:
                    where = f"job {job.id!r}{variant}, take {take.take}"
                    lines.append(f"{result}: {display_path(file)} ({where})")
        if record is None or record.status != JobStatus.SUCCEEDED:
            continue
        jobs += 1
        for picture in pictures_of(record):
            file = output_dir / picture.name
            result = check_file(file, picture.sha256, picture.size)
            found[result] += 1
            if result != FileCheck.OK:
                lines.append(f"{result}: {display_path(file)} (job {job.id!r}{variant})")
    emit(lines, sys.stdout)
    checked = sum(found.values())
    if not lines:
        emit(
            [
                f"{manifest.name}: {plural(checked, 'picture')} of "
                f"{plural(jobs, 'succeeded job')} checked, all as downloaded"
            ],
            sys.stdout,
        )
        return EXIT_OK
    emit(
        [
            f"not as downloaded: {len(lines):,} of {plural(checked, 'picture')} "
            f"({found[FileCheck.MISSING]:,} missing, {found[FileCheck.CHANGED]:,} changed); "
            "`ruxa-batch run` downloads them again from the recorded result URLs"
        ]
    )
    return EXIT_JOBS_FAILED


def print_schema() -> int:
    """Print the manifest JSON Schema."""
    emit([schema_text().rstrip("\n")], sys.stdout)
    return EXIT_OK


def init(settings: InitSettings) -> int:
    """Write a commented starter manifest; never overwrite an existing file."""
    path = settings.path
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise UsageError(f"{path}: a manifest's name ends in .yaml or .yml (e.g. {path.stem}.yaml)")
    starter = resources.files("ruxa_batch").joinpath("data/starter.yaml").read_text("utf-8")
    text = starter.replace("@NAME@", slugify(path.stem) or "my-batch").replace("@FILE@", str(path))
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise UsageError(
            f"{path} already exists; not overwriting it (choose another path)"
        ) from None
    except FileNotFoundError:
        raise UsageError(f"cannot write {path}: folder {path.parent} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None
    emit([f"wrote {path}", f"next: ruxa-batch validate {path}"], sys.stdout)
    return EXIT_OK
