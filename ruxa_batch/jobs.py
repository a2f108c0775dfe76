"""The job model: what a job is, the request it sends, its identity and its output names.

These are the plain frozen values the manifest language produces and the plan, the engine and the
result writers consume. This module knows nothing of YAML or the schema: running jobs must not need
the parser.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, overload

from ruxa_batch.local_files import LocalFile, LocalRules, UploadSpec
from ruxa_batch.models import DEFAULT_MODEL, EXTENSIONS, get_model
from ruxa_batch.template import parse_template

# The most jobs a manifest may expand to unless --max-jobs says otherwise.
DEFAULT_MAX_JOBS = 100_000
# The file names a job gets when the manifest sets no output.filename: a job with several variants
# needs {variant} in its names, and one-variant jobs keep the names they always had.
DEFAULT_FILENAME = "{id}-{n}.{ext}"
DEFAULT_VARIANTS_FILENAME = "{id}-v{variant}-{n}.{ext}"
FILENAME_PLACEHOLDERS = ("id", "variant", "n", "ext")


@dataclass(frozen=True, slots=True)  # one per job: no __dict__ each
class Job:
    """One unit of work: one request to the API (a job entry's expansion and variant)."""

    id: str
    variant: int  # 1-based
    variants: int  # how many variants the job entry asks for
    prompt: str
    images: tuple[str | LocalFile, ...]  # URLs, and pictures on disk known by content
    image_size: str
    output_format: str
    key: str  # identity: hash of the exact request plus the variant number
    origin: str  # where it came from, for messages: "jobs[1] (sku=mug, style=marble), line 7"
    model: str = DEFAULT_MODEL  # the Ruxa model that runs it
    resolution: str | None = None  # for the models that take one (see models.py)

    @property
    def ext(self) -> str:
        """File extension of this job's outputs."""
        return EXTENSIONS[self.output_format]

    @property
    def local_files(self) -> tuple[LocalFile, ...]:
        """The job's pictures on disk, which must be published before its create."""
        return tuple(image for image in self.images if isinstance(image, LocalFile))

    @property
    def image_names(self) -> tuple[str, ...]:
        """Each input as the user knows it: its URL, or its path relative to the manifest."""
        return tuple(image if isinstance(image, str) else image.shown for image in self.images)


class Jobs(Sequence[Job]):
    """A manifest's jobs in order, packed: about a third of the memory of the :class:`Job`
    values, which are made again as they are read.

    A 100,000-job batch holds its jobs in about 20 MB instead of 56 MB: a run's memory then
    barely grows with the batch (see the README's performance table).
    """

    __slots__ = ("_file_numbers", "_files", "_packed")

    def __init__(self, jobs: Iterable[Job] = ()) -> None:
        self._packed: list[bytes] = []
        self._files: list[LocalFile] = []  # each picture on disk once; images refer by number
        self._file_numbers: dict[tuple[str, str], int] = {}
        for job in jobs:
            self.append(job)

    def append(self, job: Job) -> None:
        """Add ``job`` at the end."""
        values = [getattr(job, name) for name in _JOB_FIELDS]
        values[_IMAGES] = tuple(
            image if isinstance(image, str) else self._file_number(image) for image in job.images
        )
        self._packed.append(marshal.dumps(tuple(values)))

    def _file_number(self, file: LocalFile) -> int:
        number = self._file_numbers.setdefault((file.shown, file.sha256), len(self._files))
        if number == len(self._files):
            self._files.append(file)
        return number

    def _unpack(self, packed: bytes) -> Job:
        values = list(marshal.loads(packed))
        values[_IMAGES] = tuple(
            image if isinstance(image, str) else self._files[image] for image in values[_IMAGES]
        )
        return Job(*values)

    def __len__(self) -> int:
        return len(self._packed)

    @overload
    def __getitem__(self, index: int) -> Job: ...

    @overload
    def __getitem__(self, index: slice) -> Jobs: ...

    def __getitem__(self, index: int | slice) -> Job | Jobs:
        if isinstance(index, slice):
            return Jobs(map(self._unpack, self._packed[index]))
        return self._unpack(self._packed[index])

    def values(self, field: str) -> Iterator[Any]:
        """One field of each job (not ``images``), in order, without making the jobs."""
        number = _JOB_FIELDS.index(field)
        return (marshal.loads(packed)[number] for packed in self._packed)

    def identities(self) -> Iterator[tuple[str, str, int]]:
        """Each job's key, id and variant, in order, without making the jobs."""
        key, name, variant = (_JOB_FIELDS.index(f) for f in ("key", "id", "variant"))
        for packed in self._packed:
            values = marshal.loads(packed)
            yield values[key], values[name], values[variant]

    def files(self) -> tuple[LocalFile, ...]:
        """Every picture on disk the jobs send, in order of first use."""
        return tuple(self._files)

    def __iter__(self) -> Iterator[Job]:
        return map(self._unpack, self._packed)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self._packed))

    def __repr__(self) -> str:
        return f"Jobs({len(self)} jobs)"


_JOB_FIELDS = tuple(field.name for field in fields(Job))
_IMAGES = _JOB_FIELDS.index("images")


def identities(jobs: Sequence[Job]) -> Iterator[tuple[str, str, int]]:
    """The key, id and variant of each of ``jobs``, in order (of packed jobs, without making
    them)."""
    if isinstance(jobs, Jobs):
        return jobs.identities()
    return ((job.key, job.id, job.variant) for job in jobs)


def job_keys(jobs: Sequence[Job]) -> Iterator[str]:
    """The identity of each of ``jobs``, in order (of packed jobs, without making them)."""
    return jobs.values("key") if isinstance(jobs, Jobs) else (job.key for job in jobs)


@dataclass(frozen=True)
class OutputSpec:
    """Where and under which names outputs are written."""

    dir: Path
    filename: str | None  # the manifest's output.filename; None when it sets none

    def template_for(self, job: Job) -> str:
        """The file name template of ``job``'s outputs: output.filename, else the default."""
        if self.filename is not None:
            return self.filename
        return DEFAULT_VARIANTS_FILENAME if job.variants > 1 else DEFAULT_FILENAME

    def name_for(self, job: Job, n: int) -> str:
        """The path, relative to ``dir``, of output ``n`` (1-based) of ``job``."""
        return render_filename(self.template_for(job), job, n)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest with its jobs expanded, in manifest order."""

    path: Path
    name: str
    model: str
    callback_url: str | None
    output: OutputSpec
    run: Mapping[str, Any]  # the manifest's `run:` keys as written (flags override them)
    jobs: Sequence[Job]  # a Jobs list: packed, see there
    upload: UploadSpec | None = None  # where local pictures go (None: nowhere said)
    local: LocalRules | None = None  # what local pictures may be

    @property
    def base(self) -> Path:
        """The manifest's folder: local paths, CSV files and output.dir are relative to it."""
        return self.path.parent

    def request_input(self, job: Job, urls: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The ``input`` object of ``job``'s task (see :func:`request_input`)."""
        return request_input(job, urls)

    def request_body(self, job: Job, urls: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The create request of ``job``: its model, its ``input`` (see :func:`request_input`),
        and the manifest's callback URL under the name the model's documentation gives it."""
        body: dict[str, Any] = {"model": job.model, "input": request_input(job, urls)}
        if self.callback_url:
            body[get_model(job.model).callback_field] = self.callback_url
        return body

    def models(self) -> tuple[str, ...]:
        """The models the jobs use, in order of first use."""
        jobs = self.jobs
        used = jobs.values("model") if isinstance(jobs, Jobs) else (job.model for job in jobs)
        return tuple(dict.fromkeys(used))

    def local_files(self) -> dict[str, LocalFile]:
        """Every distinct picture on disk the jobs send, by sha256, in manifest order."""
        found: dict[str, LocalFile] = {}
        if isinstance(self.jobs, Jobs):
            for file in self.jobs.files():  # known without making the jobs
                found.setdefault(file.sha256, file)
            return found
        for job in self.jobs:
            for file in job.local_files:
                found.setdefault(file.sha256, file)
        return found

    def output_name(self, job: Job, n: int) -> str:
        """The path, relative to ``output.dir``, of output ``n`` (1-based) of ``job``."""
        return self.output.name_for(job, n)


def request_input(job: Job, urls: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``input`` object of ``job``'s create request.

    With ``urls`` (sha256 -> published URL) it is exactly what is sent. Without, a picture on
    disk stands as ``sha256:<hex>``: that is the job's identity (a hash of this object), so what
    is sent and what is known as done cannot drift apart, and where a file was uploaded to (which
    changes as URLs expire) is not part of it.
    """
    images = tuple(
        image if isinstance(image, str) else (urls[image.sha256] if urls is not None else image.ref)
        for image in job.images
    )
    return get_model(job.model).build_input(
        prompt=job.prompt,
        images=images,
        image_size=job.image_size,
        output_format=job.output_format,
        resolution=job.resolution,
    )


def identity_key(model: str, request_input: Mapping[str, Any], variant: int) -> str:
    """A job's identity: it changes exactly when the request it sends (or its variant) changes."""
    canonical = _CANONICAL.encode({"model": model, "input": request_input, "variant": variant})
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


# json.dumps with these options, made once (json.dumps makes an encoder per call for them).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def render_filename(template: str, job: Job, n: int) -> str:
    """Render a file name template for one output.

    Without ``{n}`` in the template, a task that returns several pictures gets ``-2``, ``-3``...
    before the extension of the second and later ones, so no output overwrites another.
    """
    parsed = parse_template(template)
    values = {"id": job.id, "variant": str(job.variant), "n": str(n), "ext": job.ext}
    name = parsed.render(values)
    if n > 1 and "n" not in parsed.names:
        name = _suffixed(name, n)
    return name


def _suffixed(name: str, n: int) -> str:
    """Output ``n``'s name under a template without ``{n}``: ``a.png`` -> ``a-2.png``."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}-{n}.{ext}" if dot and "/" not in ext else f"{name}-{n}"


_SUFFIX = re.compile(r"-([1-9][0-9]*)$")


def unsuffixed(name: str) -> tuple[str, int] | None:
    """The name and output number (2 or more) that the ``-2``, ``-3``... rule of a template
    without ``{n}`` turns into ``name``; None when ``name`` cannot be such a suffixed name.

    ``a-2.png`` -> (``a.png``, 2): output 2 of the job whose first output is ``a.png``.
    """
    stem, dot, ext = name.rpartition(".")
    # The number sits before the extension, or at the very end when there is none.
    splits = [(stem, f".{ext}"), (name, "")] if dot else [(name, "")]
    for head, tail in splits:
        match = _SUFFIX.search(head)
        if match is None or int(match.group(1)) < 2:
            continue
        base, n = head[: match.start()] + tail, int(match.group(1))
        if _suffixed(base, n) == name:
            return base, n
    return None


def output_dir_for(manifest_output: Path, *, sandbox: bool) -> Path:
    """The run's output folder; sandbox runs get their own, so fake pictures and sandbox task
    IDs never mix with real ones."""
    return (
        manifest_output.with_name(manifest_output.name + ".sandbox") if sandbox else manifest_output
    )


def display_path(path: Path) -> str:
    """A path as the user should see it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)
