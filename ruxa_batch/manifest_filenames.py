"""The manifest's ``output`` section: the file name template's rules, and one name per job."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ruxa_batch.jobs import FILENAME_PLACEHOLDERS, Job, OutputSpec, render_filename, unsuffixed
from ruxa_batch.manifest_problems import ProblemLog
from ruxa_batch.suggest import close_matches, did_you_mean
from ruxa_batch.template import TemplateError, parse_template
from ruxa_batch.yamlsource import PathKey

_WHERE = ("output", "filename")


def read_output(
    raw: Mapping[str, Any], *, name: str, base: Path, log: ProblemLog
) -> tuple[OutputSpec, bool]:
    """The output spec, and whether its file name template is free of problems."""
    directory = Path(raw["dir"]) if "dir" in raw else Path("out") / name
    filename: str | None = raw.get("filename")
    spec = OutputSpec(
        dir=directory if directory.is_absolute() else base / directory, filename=filename
    )
    if filename is None:
        return spec, True  # the defaults (see OutputSpec.template_for) need no checks
    problems_before = len(log)
    try:
        parsed = parse_template(filename)
    except TemplateError as exc:
        log.add(_WHERE, str(exc))
    else:
        for unknown in sorted(parsed.names - set(FILENAME_PLACEHOLDERS)):
            hint = did_you_mean(close_matches(unknown, FILENAME_PLACEHOLDERS))
            log.add(
                _WHERE,
                f"unknown placeholder {{{unknown}}}{hint} "
                f"(allowed: {', '.join('{' + p + '}' for p in FILENAME_PLACEHOLDERS)})",
            )
        if "id" not in parsed.names:
            log.add(_WHERE, "output.filename must contain {id}, or every job writes the same file")
        if filename.startswith("/") or "\\" in filename:
            log.add(_WHERE, "output.filename must be a relative path using '/' separators")
    return spec, len(log) == problems_before


class FilenameCheck:
    """Report outputs that would leave ``output.dir`` or overwrite another job's, a job at a
    time as the manifest is expanded (so a big batch's jobs are not gone over again).

    A collision of the default names is reported at the job's id (``id_paths``), since the
    manifest has no output.filename to point at. ``jobs`` is where job numbers are looked up
    (it may still be growing).
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        output: OutputSpec,
        *,
        id_paths: Mapping[str, PathKey],
        log: ProblemLog,
    ) -> None:
        self.jobs = jobs
        self.output = output
        self.id_paths = id_paths
        self.log = log
        self.taken: dict[str, int] = {}  # each folded name -> the number of the job taking it

    def add(self, number: int, job: Job) -> None:
        """Check job ``number`` of ``jobs``."""
        output, log = self.output, self.log
        name = render_filename(output.template_for(job), job, 1)
        parts = name.split("/")
        if posixpath.isabs(name) or any(part in ("", ".", "..") for part in parts):
            log.add_repeated(
                _WHERE,
                "unsafe name",
                f"output.filename gives {name!r} for job {job.id!r}, which is "
                "not a plain relative path inside output.dir",
            )
            return
        folded = name.casefold()
        if folded in self.taken:
            other = self.jobs[self.taken[folded]]
            if output.filename is None:
                _default_collision(job, other, name, where=self.id_paths[job.id], log=log)
                return
            hint = (
                'add {variant}, e.g. "{id}-v{variant}-{n}.{ext}"'
                if other.id == job.id
                else "ids that differ only in upper/lower case collide on some file systems"
            )
            log.add_repeated(
                _WHERE,
                "same file name",
                f"output.filename gives job {other.id!r} variant {other.variant} "
                f"and job {job.id!r} variant {job.variant} the same file name "
                f"{name!r}; {hint}",
            )
            return
        self.taken[folded] = number

    def finish(self) -> None:
        """The checks that need every job's name."""
        template = self.output.filename
        if template is not None and "n" not in parse_template(template).names:
            _suffix_collisions(self.taken, self.jobs, template, log=self.log)


def _suffix_collisions(
    taken: Mapping[str, int], jobs: Sequence[Job], template: str, *, log: ProblemLog
) -> None:
    """Report a job's first output named like another job's output 2, 3...

    A template without {n} names a task's second and later pictures with -2, -3... before the
    extension (see render_filename), so job 'a-2' and output 2 of job 'a' would share a file.
    The check inverts that rule, so it holds for any number of pictures per task. (Templates
    with {n}, the defaults among them, get no suffix.)
    """
    suggestion = (
        template.removesuffix(".{ext}") + "-{n}.{ext}"
        if template.endswith(".{ext}")
        else "{id}-{n}.{ext}"
    )
    for folded, number in taken.items():
        source = unsuffixed(folded)
        if source is None or source[0] not in taken:
            continue
        job, other, n = jobs[number], jobs[taken[source[0]]], source[1]
        name = render_filename(template, job, 1)
        log.add_repeated(
            _WHERE,
            "same file name",
            f"output.filename gives output {n} of {_job_name(other)} and output 1 of "
            f"{_job_name(job)} the same file name {name!r} (without {{n}}, a task's second "
            f"and later pictures get -2, -3... before the extension); put {{n}} in it, "
            f'e.g. "{suggestion}", or rename one of the jobs',
        )


def _default_collision(job: Job, other: Job, name: str, *, where: PathKey, log: ProblemLog) -> None:
    hint = (
        "ids that differ only in upper/lower case collide on some file systems"
        if other.id.casefold() == job.id.casefold()
        else "rename one of them, or set output.filename"
    )
    log.add_repeated(
        where,
        "same file name",
        f"{_job_name(job)} gets the same default file name {name!r} as {_job_name(other)} "
        f"({other.origin}); {hint}",
    )


def _job_name(job: Job) -> str:
    return f"job {job.id!r}" + (f" variant {job.variant}" if job.variants > 1 else "")
