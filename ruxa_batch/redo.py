"""Redo: a new take of chosen jobs, under the same identity, keeping the earlier ones.

``ruxa-batch redo MANIFEST SELECTOR...`` picks jobs (ids, ``id@variant``, shell-style globs over
ids, ``--status``, ``--from FILE``), moves each one's pictures to ``history/take-<n>/`` in the
output folder, records the next take in the state (:meth:`StateStore.start_take`, committed before
anything is sent), then runs those jobs only: one new task each. A redo killed at any moment
continues with the next ``run`` or ``redo`` (its jobs are pending, as ``plan`` shows with the
action ``redo``); a job already redone needs ``--again`` for one more take, so a command repeated
by mistake pays nothing.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ruxa_batch.errors import UsageError
from ruxa_batch.jobs import Job, Manifest, display_path
from ruxa_batch.local_files import plural
from ruxa_batch.pictures import holds, pictures_of
from ruxa_batch.state import JobRecord, StateStore
from ruxa_batch.statuses import REDOABLE, JobStatus

HISTORY_FOLDER = "history"
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class RedoRequest:
    """What ``redo`` was asked: the selectors, and how."""

    selectors: tuple[str, ...] = ()  # ids, id@variant, globs
    statuses: tuple[JobStatus, ...] = ()  # every job with one of these statuses
    from_file: Path | None = None  # selectors one per line (the report's download)
    reason: str | None = None
    again: bool = False  # a job already redone gets one more take


@dataclass(frozen=True)
class RedoPlan:
    """Which jobs a redo makes again, and which it continues."""

    new_takes: tuple[Job, ...]  # a finished take kept, a new one started
    continuing: tuple[Job, ...]  # a take a redo started and did not finish
    notes: tuple[str, ...]  # jobs a glob or status matched but that cannot be redone
    jobs: tuple[Job, ...]  # the jobs the redo drives (both kinds), in manifest order


def read_selectors(path: Path) -> tuple[str, ...]:
    """Selectors from a file: one per line; blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise UsageError(f"cannot read the selection file {display_path(path)}: {reason}") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    found = tuple(line for line in lines if line)
    if not found:
        raise UsageError(f"the selection file {display_path(path)} names no job")
    return found


def _matches(selector: str, job: Job) -> bool:
    name, at, variant = selector.partition("@")
    if at and int(variant) != job.variant:
        return False
    return fnmatch.fnmatchcase(job.id, name) if _GLOB.search(name) else job.id == name


def select(manifest: Manifest, records: Mapping[str, JobRecord], request: RedoRequest) -> RedoPlan:
    """The jobs ``request`` names, checked: :class:`UsageError` (nothing recorded, nothing sent)
    for a selector that matches nothing, a named job that has no picture yet, or a job already
    redone without ``--again``."""
    selectors = list(request.selectors)
    if request.from_file is not None:
        selectors += read_selectors(request.from_file)
    if not selectors and not request.statuses:
        raise UsageError("name the jobs to redo: ids, id@variant, globs, --status or --from FILE")
    chosen: dict[str, Job] = {}
    explicit: set[str] = set()  # jobs named by an exact selector, not a glob or a status
    problems = []
    for selector in selectors:
        name, at, variant = selector.partition("@")
        if not name or (at and not variant.isdigit()):
            problems.append(f"{selector!r} is not a job selector (id, id@variant or a glob)")
            continue
        hits = [job for job in manifest.jobs if _matches(selector, job)]
        if not hits:
            problems.append(f"{selector!r} matches no job of {display_path(manifest.path)}")
        for job in hits:
            chosen.setdefault(job.key, job)
            if not _GLOB.search(name):
                explicit.add(job.key)
    for status in request.statuses:
        for job in manifest.jobs:
            record = records.get(job.key)
            if (record.status if record else JobStatus.PENDING) == status:
                chosen.setdefault(job.key, job)
    if request.statuses and not chosen and not problems:
        wanted = ", ".join(request.statuses)
        problems.append(f"no job of {display_path(manifest.path)} is {wanted}")
    new_takes: list[Job] = []
    continuing: list[Job] = []
    notes: list[str] = []
    for job in chosen.values():
        record = records.get(job.key)
        who = _who(job)
        if record is not None and record.take > 1 and record.status not in REDOABLE:
            continuing.append(job)  # a redo that stopped before its take finished
        elif record is None or record.status not in REDOABLE:
            status = record.status if record else JobStatus.PENDING
            message = f"{who} is {status}: it has no picture yet to redo (run the batch first)"
            (problems if job.key in explicit else notes).append(message)
        elif record.take > 1 and not request.again:
            # A redo repeated by mistake, or one that stopped part way and is run again: the
            # jobs already made again are left as they are.
            notes.append(
                f"{who} is already a redo (take {record.take}, {record.status}); "
                f"pass --again for take {record.take + 1}"
            )
        else:
            new_takes.append(job)
    if problems:
        raise UsageError(
            "; ".join(problems[:5])
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        )
    if not new_takes and not continuing:
        raise UsageError("nothing to redo: " + "; ".join(notes))
    keys = {job.key for job in (*new_takes, *continuing)}
    ordered = tuple(job for job in manifest.jobs if job.key in keys)
    return RedoPlan(tuple(new_takes), tuple(continuing), tuple(notes), ordered)


def _who(job: Job) -> str:
    return f"job {job.id!r}" + (f" variant {job.variant}" if job.variants > 1 else "")


def history_name(key: str, take: int, name: str) -> str:
    """Where a picture of take ``take`` of the job with identity ``key`` is kept, relative to
    the output folder: the identity is in the path, since after a prompt is edited or an id
    reused another job may have the same file name and take number."""
    return f"{HISTORY_FOLDER}/take-{take}/{key[:12]}/{name}"


def start_takes(
    plan: RedoPlan,
    store: StateStore,
    output_dir: Path,
    *,
    reason: str | None,
) -> None:
    """Keep each job's current take and start the next one.

    Each picture is moved to the history folder and the state follows each move at once; then
    one transaction per job records the kept take and the new one. Killed in between, nothing is
    lost: the job is still its old take, with its pictures recorded under their history names
    (the next ``run`` moves them back; the next ``redo`` goes on).
    """
    records = store.job_records()
    for job in plan.new_takes:
        record = records[job.key]
        for picture in pictures_of(record):
            if picture.name.startswith(f"{HISTORY_FOLDER}/"):
                continue  # moved by a redo that stopped before recording the new take
            kept = history_name(job.key, record.take, picture.name)
            source, target = output_dir / picture.name, output_dir / kept
            if holds(target, picture) and not holds(source, picture):
                # Moved by a redo killed before the state followed: record it there.
                store.rename_file(job.key, picture.name, kept)
                continue
            if not os.path.lexists(source):
                store.forget_file(job.key, picture.name)  # deleted by hand: nothing to keep
                continue
            kept = _free(output_dir, kept)
            # Whatever is there is kept, even a picture edited by hand since (verify then says
            # it changed): the new take never overwrites it.
            (output_dir / kept).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, output_dir / kept)
            store.rename_file(job.key, picture.name, kept)
        store.start_take(job.key, reason=reason)


def within_cap(plan: RedoPlan, cap: int | None) -> RedoPlan:
    """The plan with no more new takes than ``cap`` (``--max-tasks``): a take is started only
    for a job the run may create a task for; the others keep their pictures, with a note."""
    if cap is None or len(plan.new_takes) <= cap:
        return plan
    allowed, left = plan.new_takes[:cap], plan.new_takes[cap:]
    note = (
        f"{plural(len(left), 'more job')} were selected but are over the cap of "
        f"{plural(cap, 'task')} "
        "(--max-tasks): they keep their pictures; redo them again later"
    )
    keys = {job.key for job in (*allowed, *plan.continuing)}
    return RedoPlan(
        allowed,
        plan.continuing,
        (*plan.notes, note),
        tuple(job for job in plan.jobs if job.key in keys),
    )


def _free(output_dir: Path, name: str) -> str:
    """``name``, or ``name`` with ``-2``, ``-3``... before its extension when that is taken."""
    if not os.path.lexists(output_dir / name):
        return name
    stem, dot, ext = name.rpartition(".")
    number = 2
    while True:
        candidate = f"{stem}-{number}.{ext}" if dot else f"{name}-{number}"
        if not os.path.lexists(output_dir / candidate):
            return candidate
        number += 1


def driven(manifest: Manifest, plan: RedoPlan) -> Manifest:
    """The manifest as the redo's run sees it: only the jobs it makes again or continues."""
    return replace(manifest, jobs=plan.jobs)


def planning_records(records: Mapping[str, JobRecord], plan: RedoPlan) -> dict[str, JobRecord]:
    """The records a plan of the redo is made from before it is recorded: a job to make again
    counts as never run (one task expected, up to --max-attempts)."""
    fresh = {job.key for job in plan.new_takes}
    return {key: record for key, record in records.items() if key not in fresh}


def summary_lines(plan: RedoPlan) -> list[str]:
    """What the redo does, before it does it."""
    lines = [f"redo: {plural(len(plan.new_takes), 'new take')}"]
    if plan.continuing:
        lines[0] += f", {plural(len(plan.continuing), 'unfinished take')} continued"
    lines += [f"note: {note}" for note in plan.notes]
    return lines


def selection_text(jobs: Sequence[Job]) -> str:
    """Selectors for ``jobs``, one per line (the format of ``--from``)."""
    return "".join(
        (f"{job.id}@{job.variant}" if job.variants > 1 else job.id) + "\n" for job in jobs
    )
