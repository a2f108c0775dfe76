"""The manifest language: from a YAML file to validated, expanded jobs.

Data flows one way: :func:`load_manifest` reads the file (:mod:`ruxa_batch.yamlsource`), checks it
against the schema (:mod:`ruxa_batch.schema`), then applies the rules a schema cannot express
(templates, matrix and CSV rows, uniqueness after expansion, output names) and returns a frozen
:class:`Manifest`. Every problem found is reported at once, each pointing at a line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruxa_batch.errors import ManifestInvalid, Problem
from ruxa_batch.models import DEFAULT_MODEL, EXTENSIONS, ModelSpec, get_model
from ruxa_batch.schema import check_document
from ruxa_batch.suggest import close_matches, did_you_mean, nearest_ratios, show
from ruxa_batch.template import Template, TemplateError, parse_template, slugify
from ruxa_batch.yamlsource import Document, PathKey, YamlProblem, json_path, load_yaml, read_text

DEFAULT_MAX_JOBS = 100_000
# Defaults of the manifest's `run:` keys (each also has a command-line flag that wins).
RUN_DEFAULTS: Mapping[str, Any] = {
    "concurrency": 8,
    "rate_limit": 10.0,
    "max_attempts": 3,
    "poll_interval": 3.0,
    "task_timeout": 900.0,
    "price_per_task": None,
    "max_tasks": None,
}
DEFAULT_FILENAME = "{id}-{n}.{ext}"
MAX_CSV_BYTES = 64 * 1024 * 1024
FILENAME_PLACEHOLDERS = ("id", "variant", "n", "ext")
# The same problem in many expansions of one field is reported this many times, then summarised.
_REPEAT_LIMIT = 3

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TEMPLATED_FIELDS = ("prompt", "image_size", "output_format")


@dataclass(frozen=True)
class Job:
    """One unit of work: one request to the API (a job entry's expansion and variant)."""

    id: str
    variant: int  # 1-based
    variants: int  # how many variants the job entry asks for
    prompt: str
    images: tuple[str, ...]
    image_size: str
    output_format: str
    key: str  # identity: hash of the exact request plus the variant number
    origin: str  # where it came from, for messages: "jobs[1] (sku=mug, style=marble), line 7"

    @property
    def ext(self) -> str:
        """File extension of this job's outputs."""
        return EXTENSIONS[self.output_format]


@dataclass(frozen=True)
class OutputSpec:
    """Where and under which names outputs are written."""

    dir: Path
    filename: str


@dataclass(frozen=True)
class Manifest:
    """A validated manifest with its jobs expanded, in manifest order."""

    path: Path
    name: str
    model: str
    callback_url: str | None
    output: OutputSpec
    run: Mapping[str, Any]  # the manifest's `run:` keys as written (flags override them)
    jobs: tuple[Job, ...]

    @property
    def spec(self) -> ModelSpec:
        """The model's request rules."""
        return get_model(self.model)

    def request_input(self, job: Job) -> dict[str, Any]:
        """The ``input`` object sent to create ``job``'s task."""
        return self.spec.build_input(
            prompt=job.prompt,
            images=job.images,
            image_size=job.image_size,
            output_format=job.output_format,
        )

    def output_name(self, job: Job, n: int) -> str:
        """The path, relative to ``output.dir``, of output ``n`` (1-based) of ``job``."""
        return render_filename(self.output.filename, job, n)


def identity_key(model: str, request_input: Mapping[str, Any], variant: int) -> str:
    """A job's identity: it changes exactly when the request it sends (or its variant) changes."""
    canonical = json.dumps(
        {"model": model, "input": request_input, "variant": variant},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


def render_filename(template: str, job: Job, n: int) -> str:
    """Render ``output.filename`` for one output.

    Without ``{n}`` in the template, a task that returns several pictures gets ``-2``, ``-3``...
    before the extension of the second and later ones, so no output overwrites another.
    """
    parsed = parse_template(template)
    values = {"id": job.id, "variant": str(job.variant), "n": str(n), "ext": job.ext}
    name = parsed.render(values)
    if n > 1 and "n" not in parsed.names:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem}-{n}.{ext}" if dot and "/" not in ext else f"{name}-{n}"
    return name


def load_manifest(path: Path, *, max_jobs: int = DEFAULT_MAX_JOBS) -> Manifest:
    """Read, validate and expand one manifest; :class:`ManifestInvalid` lists every problem."""
    builder = _ManifestBuilder(path, max_jobs=max_jobs)
    manifest = builder.build()
    if builder.problems or manifest is None:
        raise ManifestInvalid(_ordered(builder.problems))
    return manifest


def check_manifest(
    path: Path, *, max_jobs: int = DEFAULT_MAX_JOBS
) -> tuple[Manifest | None, list[Problem]]:
    """Like :func:`load_manifest` but returns the problems instead of raising (for ``validate``)."""
    builder = _ManifestBuilder(path, max_jobs=max_jobs)
    manifest = builder.build()
    problems = _ordered(builder.problems)
    return (None if problems else manifest), problems


def _ordered(problems: list[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.file, p.line, p.col))


def display_path(path: Path) -> str:
    """A path as the user should see it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


@dataclass
class _Rows:
    """Variables from a job's ``rows`` (CSV file or inline list)."""

    names: tuple[str, ...]
    values: list[tuple[str, ...]]
    labels: list[str]  # per row, e.g. "products.csv:4"


@dataclass
class _Entry:
    """One job entry of the manifest, before expansion."""

    index: int
    fields: dict[str, Any]
    where: dict[str, PathKey]  # field -> path of the value in the document
    matrix: dict[str, list[str]] = field(default_factory=dict)
    rows: _Rows | None = None


class _ManifestBuilder:
    def __init__(self, path: Path, *, max_jobs: int) -> None:
        self.path = path
        self.max_jobs = max_jobs
        self.display = display_path(path)
        self.problems: list[Problem] = []
        self.doc: Document | None = None
        self.csv_cache: dict[Path, _Rows | None] = {}
        self.repeats: dict[tuple[PathKey, str], int] = {}
        self.filename_ok = True

    # -- reporting ---------------------------------------------------------------------------

    def add(self, path: PathKey, message: str, *, key: bool = False) -> None:
        assert self.doc is not None
        self.problems.append(self.doc.problem(path, message, key=key))

    def add_repeated(self, path: PathKey, kind: str, message: str) -> None:
        """Report a problem found in an expansion, summarising long runs of the same one."""
        count = self.repeats.get((path, kind), 0) + 1
        self.repeats[(path, kind)] = count
        if count <= _REPEAT_LIMIT:
            self.add(path, message)

    def summarise_repeats(self) -> None:
        for (path, kind), count in self.repeats.items():
            if count > _REPEAT_LIMIT:
                more = count - _REPEAT_LIMIT
                self.add(
                    path,
                    f"... and {more:,} more expansion{'s' if more != 1 else ''} "
                    f"with the same problem ({kind})",
                )

    # -- the pipeline ------------------------------------------------------------------------

    def build(self) -> Manifest | None:
        try:
            self.doc = load_yaml(self.path, display=self.display)
        except YamlProblem as exc:
            self.problems.append(exc.problem)
            return None
        doc = self.doc
        if not isinstance(doc.data, dict):
            kind = "a list" if isinstance(doc.data, list) else "a single value"
            self.add((), f"the manifest must be a mapping of keys (version, jobs, ...), not {kind}")
            return None
        schema_problems, broken = check_document(doc)
        self.problems.extend(schema_problems)
        data: dict[str, Any] = doc.data
        shared_keys = ("version", "model", "vars", "defaults", "output", "name", "callback_url")
        if any(_under(b, (k,)) for b in broken for k in shared_keys) or not isinstance(
            data.get("jobs"), list
        ):
            return None

        name = data.get("name") or _default_name(self.path)
        model = data.get("model", DEFAULT_MODEL)
        spec = get_model(model)
        variables = {key: str(value) for key, value in (data.get("vars") or {}).items()}
        output = self.output_spec(data.get("output") or {}, name)
        entries = [
            entry
            for index, raw in enumerate(data["jobs"])
            if not any(_under(b, ("jobs", index)) for b in broken)
            and (entry := self.entry(index, raw, data.get("defaults") or {}, variables)) is not None
        ]
        if not self.within_limit(entries):
            return None
        jobs = self.expand_all(entries, variables, spec, model)
        self.check_filenames(jobs, output)
        self.summarise_repeats()
        return Manifest(
            path=self.path,
            name=name,
            model=model,
            callback_url=data.get("callback_url"),
            output=output,
            run=dict(data.get("run") or {}),
            jobs=tuple(jobs),
        )

    def output_spec(self, raw: Mapping[str, Any], name: str) -> OutputSpec:
        base = self.path.parent
        directory = Path(raw["dir"]) if "dir" in raw else Path("out") / name
        filename = raw.get("filename", DEFAULT_FILENAME)
        where = ("output", "filename")
        problems_before = len(self.problems)
        try:
            parsed = parse_template(filename)
        except TemplateError as exc:
            self.add(where, str(exc))
        else:
            for unknown in sorted(parsed.names - set(FILENAME_PLACEHOLDERS)):
                hint = did_you_mean(close_matches(unknown, FILENAME_PLACEHOLDERS))
                self.add(
                    where,
                    f"unknown placeholder {{{unknown}}}{hint} "
                    f"(allowed: {', '.join('{' + p + '}' for p in FILENAME_PLACEHOLDERS)})",
                )
            if "id" not in parsed.names:
                self.add(
                    where, "output.filename must contain {id}, or every job writes the same file"
                )
            if filename.startswith("/") or "\\" in filename:
                self.add(where, "output.filename must be a relative path using '/' separators")
        self.filename_ok = len(self.problems) == problems_before
        return OutputSpec(
            dir=directory if directory.is_absolute() else base / directory, filename=filename
        )

    def entry(
        self,
        index: int,
        raw: Mapping[str, Any],
        defaults: Mapping[str, Any],
        variables: Mapping[str, str],
    ) -> _Entry | None:
        here: PathKey = ("jobs", index)
        fields: dict[str, Any] = {}
        where: dict[str, PathKey] = {}
        for name, value in defaults.items():
            fields[name], where[name] = value, ("defaults", name)
        for name, value in raw.items():
            if name not in ("matrix", "rows"):
                fields[name], where[name] = value, (*here, name)
        ok = True
        for required in ("prompt", "images"):
            if required not in fields:
                self.add(
                    here, f"missing required key {required!r} (set it on the job or under defaults)"
                )
                ok = False
        entry = _Entry(index, fields, where)
        matrix = raw.get("matrix") or {}
        for name, values in matrix.items():
            if name in variables:
                self.add(
                    (*here, "matrix", name),
                    f"variable {name!r} is also defined in vars; rename one of them",
                    key=True,
                )
                ok = False
            entry.matrix[name] = [_scalar_text(value) for value in values]
        if "rows" in raw:
            entry.rows = self.rows(raw["rows"], (*here, "rows"))
            if entry.rows is None:
                ok = False
            else:
                for name in entry.rows.names:
                    if name in variables or name in entry.matrix:
                        other = "vars" if name in variables else "matrix"
                        self.add(
                            (*here, "rows"),
                            f"rows column {name!r} is also defined in {other}; rename one of them",
                        )
                        ok = False
        return entry if ok else None

    def rows(self, raw: Any, where: PathKey) -> _Rows | None:
        if isinstance(raw, list):
            names = tuple(dict.fromkeys(name for row in raw for name in row))
            values, labels = [], []
            for number, row in enumerate(raw):
                missing = [name for name in names if name not in row]
                if missing:
                    self.add(
                        (*where, number),
                        f"row is missing {', '.join(map(repr, missing))} "
                        "(every row needs the same keys)",
                    )
                    return None
                values.append(tuple(_scalar_text(row[name]) for name in names))
                labels.append(f"rows[{number}]")
            return _Rows(names, values, labels)
        csv_path = self.path.parent / str(raw)
        if csv_path not in self.csv_cache:
            self.csv_cache[csv_path] = self.read_csv(csv_path, where)
        return self.csv_cache[csv_path]

    def read_csv(self, csv_path: Path, where: PathKey) -> _Rows | None:
        shown = display_path(csv_path)
        jpath = json_path(where)

        def fail(message: str, line: int = 0) -> None:
            if line:
                self.problems.append(Problem(shown, line, 1, jpath, message))
            else:
                self.add(where, f"{shown}: {message}")

        try:
            text = read_text(csv_path, display=shown, what="CSV file")
        except YamlProblem as exc:
            fail(exc.problem.message, exc.problem.line)
            return None
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        try:
            header = next(reader, None)
            if header is None or not any(cell.strip() for cell in header):
                fail("CSV file is empty; expected a header row naming the variables")
                return None
            names = tuple(cell.strip() for cell in header)
            for column, name in enumerate(names, start=1):
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    self.problems.append(
                        Problem(
                            shown,
                            1,
                            column,
                            jpath,
                            f"column {column} is named {show(name)}; use a variable name "
                            "(letters, digits and _, not starting with a digit)",
                        )
                    )
                    return None
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                fail(f"duplicate column {duplicates[0]!r} in the header", 1)
                return None
            values: list[tuple[str, ...]] = []
            labels: list[str] = []
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue  # blank lines
                if len(row) != len(names):
                    fail(
                        f"row has {len(row)} field{'s' if len(row) != 1 else ''}; the header "
                        f"has {len(names)}",
                        reader.line_num,
                    )
                    return None
                values.append(tuple(row))
                labels.append(f"{csv_path.name}:{reader.line_num}")
        except csv.Error as exc:
            reason = str(exc)
            if reason == "unexpected end of data":
                reason = "a quoted field is never closed"
            fail(f"malformed CSV: {reason}", reader.line_num)
            return None
        if not values:
            fail("CSV file has a header but no rows", 1)
            return None
        return _Rows(names, values, labels)

    def within_limit(self, entries: Sequence[_Entry]) -> bool:
        total = 0
        for entry in entries:
            count = len(entry.rows.values) if entry.rows else 1
            count *= math.prod(len(values) for values in entry.matrix.values())
            count *= int(entry.fields.get("variants", 1))
            total += count
            if total > self.max_jobs:
                self.add(
                    ("jobs", entry.index),
                    f"the manifest expands to more than {self.max_jobs:,} jobs counting variants "
                    f"(this entry alone: {count:,}); raise --max-jobs if that is intended",
                )
                return False
        return True

    def expand_all(
        self, entries: Sequence[_Entry], variables: Mapping[str, str], spec: ModelSpec, model: str
    ) -> list[Job]:
        jobs: list[Job] = []
        seen_ids: dict[str, str] = {}
        seen_keys: dict[str, Job] = {}
        for entry in entries:
            templates = self.templates(entry, variables)
            if templates is None:
                continue
            for values, label in self.combinations(entry, variables):
                expanded = self.expand(entry, templates, values, label, spec)
                if expanded is None:
                    continue
                first = expanded[0]
                id_path = entry.where["id"]
                if first.id in seen_ids:
                    reason = (
                        "add a matrix or rows variable to the id template"
                        if not templates["id"].is_literal or entry.matrix or entry.rows
                        else "ids must be unique"
                    )
                    self.add_repeated(
                        id_path,
                        "duplicate id",
                        f"duplicate id {first.id!r} (first from {seen_ids[first.id]}); {reason}",
                    )
                    continue
                seen_ids[first.id] = first.origin
                model_input = spec.build_input(
                    prompt=first.prompt,
                    images=first.images,
                    image_size=first.image_size,
                    output_format=first.output_format,
                )
                for variant in range(1, first.variants + 1):
                    key = identity_key(model, model_input, variant)
                    job = Job(
                        first.id,
                        variant,
                        first.variants,
                        first.prompt,
                        first.images,
                        first.image_size,
                        first.output_format,
                        key,
                        first.origin,
                    )
                    if key in seen_keys:
                        other = seen_keys[key]
                        self.add_repeated(
                            id_path,
                            "same request",
                            f"job {job.id!r} sends exactly the same request as job "
                            f"{other.id!r} ({other.origin}); use 'variants: 2' on one "
                            "job to get several generations of one request",
                        )
                        break
                    seen_keys[key] = job
                    jobs.append(job)
        return jobs

    def templates(self, entry: _Entry, variables: Mapping[str, str]) -> dict[str, Any] | None:
        known = set(variables) | set(entry.matrix) | set(entry.rows.names if entry.rows else ())
        parsed: dict[str, Any] = {}
        ok = True

        def parse(name: str, text: Any, where: PathKey) -> Template | None:
            nonlocal ok
            try:
                template = parse_template(str(text))
            except TemplateError as exc:
                self.add(where, str(exc))
                ok = False
                return None
            for unknown in sorted(template.names - known):
                hint = did_you_mean(close_matches(unknown, sorted(known)))
                listing = f" (known: {', '.join(sorted(known))})" if known and not hint else ""
                self.add(where, f"unknown variable {{{unknown}}}{hint}{listing}")
                ok = False
            return template

        parsed["id"] = parse("id", entry.fields["id"], entry.where["id"])
        for name in _TEMPLATED_FIELDS:
            if name in entry.fields:
                parsed[name] = parse(name, entry.fields[name], entry.where[name])
        parsed["images"] = [
            parse("images", image, (*entry.where["images"], number))
            for number, image in enumerate(entry.fields["images"])
        ]
        return parsed if ok else None

    def combinations(
        self, entry: _Entry, variables: Mapping[str, str]
    ) -> Iterator[tuple[dict[str, str], str]]:
        matrix_names = list(entry.matrix)
        row_source: Sequence[tuple[tuple[str, ...], str]] = [((), "")]
        if entry.rows:
            row_source = list(zip(entry.rows.values, entry.rows.labels, strict=True))
        row_names = entry.rows.names if entry.rows else ()
        for row, row_label in row_source:
            for combo in itertools.product(*(entry.matrix[name] for name in matrix_names)):
                values = dict(variables)
                values.update(zip(row_names, row, strict=False))
                values.update(zip(matrix_names, combo, strict=False))
                shown = ", ".join(f"{n}={values[n]}" for n in (*row_names, *matrix_names))
                label = f"jobs[{entry.index}]"
                if row_label:
                    label += f" {row_label}"
                if shown:
                    label += f" ({shown if len(shown) <= 80 else shown[:77] + '...'})"
                yield values, label

    def expand(
        self,
        entry: _Entry,
        templates: Mapping[str, Any],
        values: Mapping[str, str],
        label: str,
        spec: ModelSpec,
    ) -> list[Job] | None:
        fields = entry.fields
        where = entry.where
        suffix = f" in {label}" if "(" in label or " " in label else ""
        ok = True

        job_id = templates["id"].render(values, transform=slugify)
        if not _ID.match(job_id):
            self.add_repeated(
                where["id"],
                "invalid id",
                f"id {show(job_id)} is not valid{suffix}: use letters, digits, '.', "
                "'_' and '-', starting with a letter or digit, at most 128 characters",
            )
            ok = False
        prompt = templates["prompt"].render(values)
        if not prompt.strip():
            self.add_repeated(where["prompt"], "blank prompt", f"prompt is blank{suffix}")
            ok = False
        images = []
        for number, template in enumerate(templates["images"]):
            url = template.render(values)
            problem = _url_problem(url)
            if problem:
                self.add_repeated(
                    (*where["images"], number), "bad URL", f"{show(url)} {problem}{suffix}"
                )
                ok = False
            images.append(url)
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
        if not ok or image_size is None or output_format is None:
            return None
        variants = int(fields.get("variants", 1))
        origin = f"{label}, line {self.locate_line(where['id'])}"
        return [
            Job(job_id, 1, variants, prompt, tuple(images), image_size, output_format, "", origin)
        ]

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
        if name not in templates:
            return default
        value: str = templates[name].render(values)
        if value in allowed:
            return value
        near = nearest_ratios(value, allowed) if name == "image_size" else []
        hint = did_you_mean(near or close_matches(value, allowed))
        self.add_repeated(
            where[name],
            f"invalid {name}",
            f"{show(value)} is not a valid {name}{suffix}{hint} (allowed: {', '.join(allowed)})",
        )
        return None

    def locate_line(self, path: PathKey) -> int:
        assert self.doc is not None
        return self.doc.locate(path)[0]

    def check_filenames(self, jobs: Sequence[Job], output: OutputSpec) -> None:
        if not self.filename_ok:
            return  # the template itself is already reported
        where = ("output", "filename")
        taken: dict[str, Job] = {}
        for job in jobs:
            name = render_filename(output.filename, job, 1)
            parts = name.split("/")
            if posixpath.isabs(name) or any(part in ("", ".", "..") for part in parts):
                self.add_repeated(
                    where,
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
                self.add_repeated(
                    where,
                    "same file name",
                    f"output.filename gives job {other.id!r} variant {other.variant} "
                    f"and job {job.id!r} variant {job.variant} the same file name "
                    f"{name!r}; {hint}",
                )
                continue
            taken[folded] = job


def _url_problem(url: str) -> str | None:
    if any(ch.isspace() for ch in url):
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


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e16 else str(value)
    return str(value)


def _default_name(path: Path) -> str:
    return slugify(path.stem) or "manifest"


def _under(path: PathKey, prefix: PathKey) -> bool:
    return path[: len(prefix)] == prefix
