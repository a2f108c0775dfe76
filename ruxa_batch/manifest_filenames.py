"""The manifest's ``output`` section: the file name template's rules, and one name per job."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ruxa_batch.jobs import (
    DEFAULT_FILENAME,
    FILENAME_PLACEHOLDERS,
    Job,
    OutputSpec,
    render_filename,
)
from ruxa_batch.manifest_problems import ProblemLog
from ruxa_batch.suggest import close_matches, did_you_mean
from ruxa_batch.template import TemplateError, parse_template

_WHERE = ("output", "filename")


def read_output(
    raw: Mapping[str, Any], *, name: str, base: Path, log: ProblemLog
) -> tuple[OutputSpec, bool]:
    """The output spec, and whether its file name template is free of problems."""
    directory = Path(raw["dir"]) if "dir" in raw else Path("out") / name
    filename = raw.get("filename", DEFAULT_FILENAME)
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
    spec = OutputSpec(
        dir=directory if directory.is_absolute() else base / directory, filename=filename
    )
    return spec, len(log) == problems_before


def check_filenames(jobs: Sequence[Job], output: OutputSpec, *, log: ProblemLog) -> None:
    """Report outputs that would leave ``output.dir`` or overwrite another job's."""
    taken: dict[str, Job] = {}
    for job in jobs:
        name = render_filename(output.filename, job, 1)
        parts = name.split("/")
        if posixpath.isabs(name) or any(part in ("", ".", "..") for part in parts):
            log.add_repeated(
                _WHERE,
                "unsafe name",
                f"output.filename gives {name!r} for job {job.id!r}, which is "
                "not a plain relative path inside output.dir",
            )
            continue
        folded = name.casefold()
        if folded in taken:
            other = taken[folded]
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
            continue
        taken[folded] = job
