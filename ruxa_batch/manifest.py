"""The manifest language: from a YAML file to validated, expanded jobs.

Data flows one way: :func:`load_manifest` reads the file (:mod:`ruxa_batch.yamlsource`), checks it
against the schema (:mod:`ruxa_batch.schema`), then applies the rules a schema cannot express and
returns a frozen :class:`~ruxa_batch.jobs.Manifest`. Those rules live beside this module: job
entries (:mod:`ruxa_batch.manifest_entries`), their rows (:mod:`ruxa_batch.manifest_rows`),
expansion and identity (:mod:`ruxa_batch.manifest_expand`) and output names
(:mod:`ruxa_batch.manifest_filenames`). Every problem found is reported at once
(:mod:`ruxa_batch.manifest_problems`), each pointing at a line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ruxa_batch.errors import ManifestInvalid, Problem
from ruxa_batch.jobs import DEFAULT_MAX_JOBS, Manifest, display_path, output_dir_for
from ruxa_batch.local_files import BaseUrlSpec
from ruxa_batch.manifest_entries import read_entry
from ruxa_batch.manifest_expand import Expander
from ruxa_batch.manifest_filenames import FilenameCheck, read_output
from ruxa_batch.manifest_files import FileReader, read_local_rules, read_upload
from ruxa_batch.manifest_problems import ProblemLog, ordered
from ruxa_batch.manifest_rows import RowReader
from ruxa_batch.models import DEFAULT_MODEL
from ruxa_batch.schema import check_document
from ruxa_batch.template import slugify
from ruxa_batch.yamlsource import PathKey, YamlProblem, json_path, load_yaml

# Top-level keys the expansion of jobs needs: when one is broken, the jobs are not expanded.
# The others (version, model, name, callback_url) are reported and the jobs still checked, so
# that one run of validate shows every problem.
_SHARED_KEYS = ("vars", "defaults", "output", "local_images")


def load_manifest(path: Path, *, max_jobs: int = DEFAULT_MAX_JOBS, packed: bool = True) -> Manifest:
    """Read, validate and expand one manifest; :class:`ManifestInvalid` lists every problem.

    Its jobs are kept packed (:class:`~ruxa_batch.jobs.Jobs`: a run's memory barely grows with
    the batch) unless ``packed`` is false: a command that goes over every job once and exits
    (``plan``) is faster with the jobs as they are made.
    """
    manifest, problems = _build(path, max_jobs=max_jobs, packed=packed)
    if problems or manifest is None:
        raise ManifestInvalid(problems)
    return manifest


def check_manifest(
    path: Path, *, max_jobs: int = DEFAULT_MAX_JOBS
) -> tuple[Manifest | None, list[Problem]]:
    """Like :func:`load_manifest` but returns the problems instead of raising (for ``validate``)."""
    manifest, problems = _build(path, max_jobs=max_jobs, packed=False)
    return (None if problems else manifest), problems


def _build(
    path: Path, *, max_jobs: int, packed: bool = True
) -> tuple[Manifest | None, list[Problem]]:
    """The manifest (None when it cannot be built at all) and every problem, in line order."""
    try:
        doc = load_yaml(path, display=display_path(path))
    except YamlProblem as exc:
        return None, [exc.problem]
    log = ProblemLog(doc)
    manifest = _build_document(path, log, max_jobs=max_jobs, packed=packed)
    return manifest, ordered(log.problems)


def _non_finite(value: Any, where: PathKey) -> Iterator[PathKey]:
    """Paths of the infinite and not-a-number values in a document."""
    if isinstance(value, float) and not math.isfinite(value):
        yield where
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*where, index))


def _build_document(
    path: Path, log: ProblemLog, *, max_jobs: int, packed: bool = True
) -> Manifest | None:
    doc = log.doc
    if not isinstance(doc.data, dict):
        kind = "a list" if isinstance(doc.data, list) else "a single value"
        log.add((), f"the manifest must be a mapping of keys (version, jobs, ...), not {kind}")
        return None
    schema_problems, broken = check_document(doc)
    data: dict[str, Any] = doc.data
    # .inf, .nan and 1e999 pass the schema's range checks (nan compares false) and would hang or
    # break a run: no value of a manifest may be one. That is the one problem said about them.
    non_finite = list(_non_finite(data, ()))
    said = {json_path(where) for where in non_finite}
    log.extend([problem for problem in schema_problems if problem.path not in said])
    for where in non_finite:
        log.add(where, "must be a finite number, not .inf or .nan")
        broken.add(where)
    if any(_under(b, (k,)) for b in broken for k in _SHARED_KEYS) or not isinstance(
        data.get("jobs"), list
    ):
        return None

    def usable(key: str) -> bool:
        return key in data and not any(_under(b, (key,)) for b in broken)

    name = data["name"] if usable("name") and data["name"] else _default_name(path)
    model = data["model"] if usable("model") else DEFAULT_MODEL
    variables = {key: str(value) for key, value in (data.get("vars") or {}).items()}
    output, filename_ok = read_output(
        data.get("output") or {}, name=name, base=path.parent, log=log
    )
    rows = RowReader(path.parent, log)
    local = read_local_rules(data.get("local_images") or {}, path.parent)
    outputs = (output.dir, output_dir_for(output.dir, sandbox=True))
    files = FileReader(path.parent, local, log, max_matches=max_jobs, outputs=outputs)
    upload = read_upload(data["upload"], log) if usable("upload") else None
    defaults = data.get("defaults") or {}
    entries = []
    for index, raw in enumerate(data["jobs"]):
        if not any(_under(b, ("jobs", index)) for b in broken):
            entry = read_entry(index, raw, defaults, variables, log=log, rows=rows, files=files)
            if entry is not None:
                entries.append(entry)
        elif (
            isinstance(raw, dict)
            and isinstance(raw.get("rows"), str)
            and not any(_under(b, ("jobs", index, "rows")) for b in broken)
        ):
            # The entry cannot be expanded, but the CSV file it reads is checked all the same,
            # so that one run of validate reports its problems too.
            rows.read(raw["rows"], ("jobs", index, "rows"))
    # Given at all counts for the models that require one: a bad value is reported as such.
    callback_url = data.get("callback_url")
    expander = Expander(
        log,
        # A misspelled top-level model is reported once, not again at every job that runs on it.
        model=model if usable("model") or "model" not in data else None,
        variables=variables,
        files=files,
        callback_url=callback_url,
        packed=packed,
    )
    if not expander.within_limit(entries, max_jobs):
        return None
    # Output names are checked as each job is made (filename_ok: else the template itself is
    # already reported).
    names = FilenameCheck(expander.jobs, output, id_paths=expander.id_paths, log=log)
    jobs = expander.expand_all(entries, each=names.add if filename_ok else None)
    if filename_ok:
        names.finish()
    if upload is not None and isinstance(upload.method, BaseUrlSpec):
        for job in jobs:
            outside = [file.shown for file in job.local_files if Path(file.shown).is_absolute()]
            if outside:
                log.add(
                    ("upload", "base_url"),
                    f"base_url publishes the manifest's folder, but job {job.id!r} sends "
                    f"{outside[0]}, which is outside it",
                )
                break
    log.summarise_repeats()
    return Manifest(
        path=path,
        name=name,
        model=model,
        callback_url=data.get("callback_url"),
        output=output,
        run=dict(data.get("run") or {}),
        jobs=jobs,
        upload=upload,
        local=local,
    )


def _default_name(path: Path) -> str:
    return slugify(path.stem) or "manifest"


def _under(path: PathKey, prefix: PathKey) -> bool:
    return path[: len(prefix)] == prefix
