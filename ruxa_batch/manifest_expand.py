"""Expansion: job entries become jobs, one per rows x matrix combination and variant.

Templates are parsed and checked against the variables in scope, each combination is rendered and
checked (ids, URLs, sizes, formats), and every job gets its identity. Ids and requests must be
unique after expansion.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ruxa_batch.jobs import Job, Jobs, identity_key, request_input
from ruxa_batch.local_files import LocalFile, is_url
from ruxa_batch.manifest_entries import Entry
from ruxa_batch.manifest_files import FILE_VARIABLES, FileReader
from ruxa_batch.manifest_problems import ProblemLog
from ruxa_batch.models import DEFAULT_MODEL, MODEL_FIELDS, MODELS, ModelSpec, models_taking
from ruxa_batch.suggest import close_matches, did_you_mean, nearest_ratios, show
from ruxa_batch.template import Template, TemplateError, parse_template, slugify
from ruxa_batch.yamlsource import PathKey

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TEMPLATED_FIELDS = ("prompt", "image_size", "output_format", "resolution")


class Expander:
    """Expands the entries of one manifest, reporting problems to ``log``."""

    def __init__(
        self,
        log: ProblemLog,
        *,
        model: str | None,
        variables: Mapping[str, str],
        files: FileReader,
        callback_url: str | None = None,
        packed: bool = True,
    ) -> None:
        self.log = log
        self.files = files
        self.model = model  # the manifest's, for the jobs that name none (None: it is invalid)
        self._said: set[tuple[str, ...]] = set()  # problems said once for the whole manifest
        self.callback_url = callback_url
        self.variables = variables
        self.id_paths: dict[str, PathKey] = {}  # each expanded id -> where its template is
        self.jobs: Jobs | list[Job] = Jobs() if packed else []  # what expand_all fills

    def within_limit(self, entries: Sequence[Entry], max_jobs: int) -> bool:
        """False (and a problem reported) when the entries expand to more than ``max_jobs``."""
        total = 0
        for entry in entries:
            count = entry.count() * int(entry.fields.get("variants", 1))
            total += count
            if total > max_jobs:
                self.log.add(
                    ("jobs", entry.index),
                    f"the manifest expands to more than {max_jobs:,} jobs counting variants "
                    f"(this entry alone: {count:,}); raise --max-jobs if that is intended",
                )
                return False
        return True

    def expand_all(
        self, entries: Sequence[Entry], *, each: Callable[[int, Job], None] | None = None
    ) -> Sequence[Job]:
        """Every job of ``entries``, in manifest order; the ones with problems are left out.
        ``each`` is called with each job's number and the job as it is added."""
        jobs = self.jobs
        seen_ids: dict[str, str] = {}
        seen_keys: dict[str, int] = {}  # the number of the job with that identity, not the job
        for entry in entries:
            spec = self.model_of(entry)
            templates = self.templates(entry)
            if spec is None or templates is None:
                continue
            for values, label in self.combinations(entry):
                first = self.expand(entry, spec, templates, values, label)
                if first is None:
                    continue
                id_path = entry.where["id"]
                if first.id in seen_ids:
                    reason = (
                        # Files in two folders can share a stem and a name, never a path.
                        "put {file} in the id template: files in different folders can share "
                        "their {stem} and {name}"
                        if entry.files is not None
                        else "add a matrix or rows variable to the id template"
                        if not templates["id"].is_literal or entry.matrix or entry.rows
                        else "ids must be unique"
                    )
                    self.log.add_repeated(
                        id_path,
                        "duplicate id",
                        f"duplicate id {first.id!r} (first from {seen_ids[first.id]}); {reason}",
                    )
                    continue
                seen_ids[first.id] = first.origin
                self.id_paths[first.id] = id_path
                model_input = request_input(first)
                for variant in range(1, first.variants + 1):
                    key = identity_key(first.model, model_input, variant)
                    job = Job(  # positional: dataclasses.replace costs 5 us a job
                        first.id,
                        variant,
                        first.variants,
                        first.prompt,
                        first.images,
                        first.image_size,
                        first.output_format,
                        key,
                        first.origin,
                        first.model,
                        first.resolution,
                    )
                    if key in seen_keys:
                        other = jobs[seen_keys[key]]
                        self.log.add_repeated(id_path, "same request", _same_request(job, other))
                        break
                    seen_keys[key] = len(jobs)
                    jobs.append(job)
                    if each is not None:
                        each(len(jobs) - 1, job)
        return jobs

    def model_of(self, entry: Entry) -> ModelSpec | None:
        """The entry's model (its own, else defaults', else the manifest's), once it is known
        to take every field the entry gives it; None after reporting why not."""
        if "model" not in entry.fields and self.model is None:
            # The manifest's model is misspelled (and reported): the job is still checked in
            # every other way, without the checks that need to know its model.
            return MODELS[DEFAULT_MODEL]
        name = entry.fields.get("model", self.model)
        spec = MODELS.get(name) if isinstance(name, str) else None
        if spec is None:
            return None  # the schema has said why
        here: PathKey = ("jobs", entry.index)
        at = entry.where.get("model", here)  # where the job's model is said (or the job)
        shown = f"{spec.name} ({spec.kind})"
        ok = True
        for field in MODEL_FIELDS:
            if field not in entry.fields or spec.takes(field):
                continue
            takers = ", ".join(models_taking(field))
            where = entry.where[field]
            if where[0] == "defaults":
                if self.once("defaults", field, spec.name):
                    self.log.add(
                        at,
                        f"jobs[{entry.index}] runs on {shown}, which takes no {field}, but "
                        f"defaults sets {field} (line {self.log.doc.locate(where)[0]}); set "
                        f"{field} on the jobs whose models take it ({takers}) instead (said "
                        "once: it holds for every job on this model that does not override it)",
                    )
            else:
                self.log.add(
                    where,
                    f"{field} is not taken by {shown}; the models that take it: {takers}",
                )
            ok = False
        if spec.images_required and "images" not in entry.fields:
            optional = ", ".join(
                name for name, other in MODELS.items() if not other.images_required
            )
            self.log.add(
                here,
                f"missing required key 'images': the job runs on {spec.name}, which "
                f"{spec.kind}; set images on the job or under defaults, or choose a model that "
                f"needs none: {optional}",
            )
            ok = False
        images = entry.fields.get("images")
        if spec.takes("images") and isinstance(images, list) and len(images) > spec.max_images:
            self.log.add(
                entry.where["images"],
                f"has {len(images)} entries; {spec.name} takes at most {spec.max_images}",
            )
            ok = False
        if spec.callback_required and self.callback_url is None:
            if self.once("callback", spec.name):
                self.log.add(
                    at,
                    f"{spec.name} requires a callback URL and the manifest sets none: add "
                    "callback_url at the top of the manifest (an https:// endpoint of yours that "
                    "accepts POST requests); ruxa-batch still polls every task, so the run "
                    "does not depend on the callbacks arriving",
                )
            ok = False
        return spec if ok else None

    def once(self, *problem: str) -> bool:
        """True the first time ``problem`` is met: a problem of the manifest as a whole is said
        once, not at every job it touches."""
        if problem in self._said:
            return False
        self._said.add(problem)
        return True

    def templates(self, entry: Entry) -> dict[str, Any] | None:
        """The entry's templated fields parsed, or None if one is malformed or unknown names."""
        known = set(self.variables) | entry.names()
        parsed: dict[str, Any] = {}
        ok = True

        def parse(text: Any, where: PathKey) -> Template | None:
            nonlocal ok
            try:
                template = parse_template(str(text))
            except TemplateError as exc:
                self.log.add(where, str(exc))
                ok = False
                return None
            for unknown in sorted(template.names - known):
                hint = did_you_mean(close_matches(unknown, sorted(known)))
                listing = f" (known: {', '.join(sorted(known))})" if known and not hint else ""
                self.log.add(where, f"unknown variable {{{unknown}}}{hint}{listing}")
                ok = False
            return template

        parsed["id"] = parse(entry.fields["id"], entry.where["id"])
        for name in _TEMPLATED_FIELDS:
            if name in entry.fields:
                parsed[name] = parse(entry.fields[name], entry.where[name])
        parsed["images"] = [
            parse(image, (*entry.where["images"], number))
            for number, image in enumerate(entry.fields.get("images") or ())
        ]
        return parsed if ok else None

    def combinations(self, entry: Entry) -> Iterator[tuple[dict[str, str], str]]:
        """Each files x rows x matrix combination's variables, with a label naming it."""
        matrix_names = list(entry.matrix)
        row_source: Sequence[tuple[tuple[str, ...], str]] = [((), "")]
        if entry.rows:
            row_source = list(zip(entry.rows.values, entry.rows.labels, strict=True))
        row_names = entry.rows.names if entry.rows else ()
        file_source: Sequence[tuple[str, ...]] = [()] if entry.files is None else entry.files
        file_names = FILE_VARIABLES if entry.files is not None else ()
        for file_values, (row, row_label) in itertools.product(file_source, row_source):
            for combo in itertools.product(*(entry.matrix[name] for name in matrix_names)):
                values = dict(self.variables)
                values.update(zip(file_names, file_values, strict=False))
                values.update(zip(row_names, row, strict=False))
                values.update(zip(matrix_names, combo, strict=False))
                named = (*file_names[:1], *row_names, *matrix_names)
                shown = ", ".join(f"{n}={values[n]}" for n in named)
                label = f"jobs[{entry.index}]"
                if row_label:
                    label += f" {row_label}"
                if shown:
                    label += f" ({shown if len(shown) <= 80 else shown[:77] + '...'})"
                yield values, label

    def expand(
        self,
        entry: Entry,
        spec: ModelSpec,
        templates: Mapping[str, Any],
        values: Mapping[str, str],
        label: str,
    ) -> Job | None:
        """One combination rendered as the job's first variant (no identity yet), if valid."""
        fields = entry.fields
        where = entry.where
        suffix = f" in {label}" if "(" in label or " " in label else ""
        ok = True

        job_id = templates["id"].render(values, transform=slugify)
        if not _ID.match(job_id):
            self.log.add_repeated(
                where["id"],
                "invalid id",
                f"id {show(job_id)} is not valid{suffix}: use letters, digits, '.', "
                "'_' and '-', starting with a letter or digit, at most 128 characters",
            )
            ok = False
        prompt = templates["prompt"].render(values)
        if not prompt.strip():
            self.log.add_repeated(where["prompt"], "blank prompt", f"prompt is blank{suffix}")
            ok = False
        images: list[str | LocalFile] = []
        for number, template in enumerate(templates["images"]):
            text = template.render(values)
            image_where = (*where["images"], number)
            if is_url(text) or not text.strip():
                problem = _url_problem(text)
                if problem and self.files.exists(text):
                    problem += f"; for the local file of that name write ./{text}"
                if problem:
                    self.log.add_repeated(image_where, "bad URL", f"{show(text)} {problem}{suffix}")
                    ok = False
                images.append(text)
                continue
            local = self.files.local(text, image_where, suffix)
            if local is None:
                ok = False
            else:
                images.append(local)
        image_size = self.choice(
            templates,
            "image_size",
            values,
            spec.image_sizes,
            spec.default_image_size,
            where,
            suffix,
        )
        output_format = self.choice(
            templates,
            "output_format",
            values,
            spec.output_formats,
            spec.default_output_format,
            where,
            suffix,
        )
        resolution = None
        if spec.resolutions:
            resolution = self.choice(
                templates,
                "resolution",
                values,
                spec.resolutions,
                spec.default_resolution or spec.resolutions[0],
                where,
                suffix,
            )
            ok = ok and resolution is not None
        if not ok or image_size is None or output_format is None:
            return None
        variants = int(fields.get("variants", 1))
        origin = f"{label}, line {self.log.doc.locate(where['id'])[0]}"
        return Job(
            job_id,
            1,
            variants,
            prompt,
            tuple(images),
            image_size,
            output_format,
            "",
            origin,
            model=spec.name,
            resolution=resolution,
        )

    def choice(
        self,
        templates: Mapping[str, Any],
        name: str,
        values: Mapping[str, str],
        allowed: Sequence[str],
        default: str,
        where: Mapping[str, PathKey],
        suffix: str,
    ) -> str | None:
        """The value of a field with a closed set of values (the default when unset)."""
        if name not in templates:
            return default
        value: str = templates[name].render(values)
        if value in allowed:
            return value
        near = nearest_ratios(value, allowed) if name == "image_size" else []
        hint = did_you_mean(near or close_matches(value, allowed))
        self.log.add_repeated(
            where[name],
            f"invalid {name}",
            f"{show(value)} is not a valid {name}{suffix}{hint} (allowed: {', '.join(allowed)})",
        )
        return None


def _same_request(job: Job, other: Job) -> str:
    """Why ``job`` may not be expanded beside ``other``, which sends the very same request."""
    copies = [
        (mine.shown, theirs.shown)
        for mine, theirs in zip(job.local_files, other.local_files, strict=False)
        if mine.shown != theirs.shown
    ]
    if copies:
        # Two files with the same bytes in a folder of photos: the job counts a picture by its
        # content, so both jobs would send one request.
        mine, theirs = copies[0]
        return (
            f"job {job.id!r} sends exactly the same request as job {other.id!r} "
            f"({other.origin}): {mine} and {theirs} hold the same bytes; delete one copy, or "
            "put {name} in the prompt to make them two requests"
        )
    return (
        f"job {job.id!r} sends exactly the same request as job {other.id!r} ({other.origin}); "
        "use 'variants: 2' on one job to get several generations of one request"
    )


# str.isspace's characters (a regex, not a loop over characters: 100,000 URLs are checked).
_SPACE = re.compile(r"\s")


# The usual URL, http(s)://host/path without spaces or a port or credentials: fine at a glance
# (urlsplit is the slowest step of expanding 100,000 jobs); anything else gets the full check.
_PLAIN_URL = re.compile(r"[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9.-]+(?:[/?#][^\s]*)?")


def _url_problem(url: str) -> str | None:
    if _PLAIN_URL.fullmatch(url):
        return None
    if not url.strip():
        return "is blank: give an http(s) URL or the path of a local picture"
    if _SPACE.search(url):
        return "is not a valid URL: it contains white space"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "is not an http(s) URL"
    if not parts.netloc:
        return "is not a valid URL: it has no host"
    return None
