"""Local pictures in a manifest: paths in ``images:``, globs in ``files:``, and the ``upload:`` and
``local_images:`` sections.

A path is relative to the manifest's folder and must stay inside it or inside a root that
``local_images.roots`` names (after symbolic links are followed). A file is a picture by its bytes
(PNG, JPEG or WebP), never by its name, and at most ``local_images.max_file_mb``. Each file is read
and hashed once per manifest, whatever the number of jobs sending it.
"""

from __future__ import annotations

import glob as globbing
import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruxa_batch.local_files import (
    COMMAND_PLACEHOLDERS,
    DEFAULT_MAX_FILE_MB,
    DEFAULT_UPLOAD_CONCURRENCY,
    BaseUrlSpec,
    CommandSpec,
    LocalFile,
    LocalRules,
    S3Spec,
    UploadSpec,
    hash_file,
    is_url,
    sniff,
)
from ruxa_batch.manifest_problems import ProblemLog
from ruxa_batch.suggest import show
from ruxa_batch.template import TemplateError, parse_template
from ruxa_batch.yamlsource import PathKey

# Variables a ``files:`` glob gives each of its expansions.
FILE_VARIABLES = ("file", "stem", "name")


class FileReader:
    """Resolves, checks and hashes the local pictures of one manifest."""

    def __init__(
        self,
        base: Path,
        rules: LocalRules,
        log: ProblemLog,
        *,
        max_matches: int = 100_000,
        outputs: tuple[Path, ...] = (),
    ) -> None:
        self.base = base.resolve()
        self.rules = rules
        self.log = log
        self.max_matches = max_matches  # paths one glob may match (the manifest's --max-jobs)
        # The run's output folders: a glob such as **/*.png must not take in last run's
        # pictures (or the sandbox's copies of the inputs), or every run would add jobs.
        self.outputs = tuple(folder.resolve() for folder in outputs)
        self._files: dict[Path, LocalFile | str] = {}  # resolved path -> file, or its problem

    def allowed(self, path: Path) -> bool:
        """Whether ``path`` (resolved) lies in the manifest's folder or an allowed root."""
        return any(path.is_relative_to(root) for root in self.rules.roots)

    def exists(self, text: str) -> bool:
        """Whether ``text``, read as a path relative to the manifest's folder, names a file."""
        try:
            return (self.base / text).is_file()
        except (OSError, ValueError):
            return False

    def shown(self, path: Path) -> str:
        """``path`` as a manifest names it: relative to the manifest's folder, else absolute;
        ``./shot:1.png`` for a name that would read as a URL (the scheme ``shot``)."""
        try:
            shown = path.relative_to(self.base).as_posix()
        except ValueError:
            return str(path)
        return f"./{shown}" if is_url(shown) else shown

    def glob(self, pattern: str, where: PathKey) -> list[tuple[str, str, str]] | None:
        """The ``(file, stem, name)`` variables of each file ``pattern`` matches, sorted by path;
        None after reporting why there are none."""
        expanded = os.path.expanduser(pattern)
        full = expanded if os.path.isabs(expanded) else os.path.join(self.base, expanded)
        matches: list[tuple[str, str, str]] = []
        outside: list[str] = []
        # ** follows linked folders: two links back to their own folder make 2**40 paths, so
        # the walk is lazy and stops past the cap rather than hanging.
        hits = list(itertools.islice(globbing.iglob(full, recursive=True), self.max_matches + 1))
        if len(hits) > self.max_matches:
            self.log.add(
                where,
                f"{show(pattern)} matches more than {self.max_matches:,} paths (a symbolic link "
                "back to its own folder makes ** endless); raise --max-jobs if that is intended",
            )
            return None
        for hit in hits:
            path = Path(hit)
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if not real.is_file() or self._in_outputs(path):
                continue
            if not self.allowed(real):
                outside.append(hit)
                continue
            matches.append((self._glob_shown(hit, real), path.stem, path.name))
        if outside and not matches:
            self.log.add(
                where,
                f"{show(pattern)} matches only files outside the manifest's folder and its "
                "allowed roots (local_images.roots)",
            )
            return None
        if not matches:
            self.log.add(where, f"{show(pattern)} matches no file (patterns are case-sensitive)")
            return None
        return sorted(set(matches))

    def _in_outputs(self, path: Path) -> bool:
        """Whether ``path`` (as matched, or once links are followed) lies in an output folder."""
        try:
            places = (Path(os.path.abspath(path)), path.resolve())
        except (OSError, RuntimeError):
            return False
        return any(place.is_relative_to(out) for place in places for out in self.outputs)

    def _glob_shown(self, hit: str, real: Path) -> str:
        """The ``file`` variable of a glob's ``hit``: a path that names that same file again."""
        normal = os.path.normpath(hit)
        # normpath drops "dir/.." without asking the disk: through a linked folder that names
        # another file (or none), so the hit is then kept as matched.
        return self.shown(Path(normal if Path(normal).resolve() == real else hit))

    def local(self, text: str, where: PathKey, suffix: str) -> LocalFile | None:
        """The picture at path ``text``; None after reporting why it cannot be sent."""
        expanded = os.path.expanduser(text)
        path = Path(expanded if os.path.isabs(expanded) else os.path.join(self.base, expanded))
        try:
            real = path.resolve(strict=True)
        except FileNotFoundError:
            self.log.add_repeated(where, "missing file", f"{show(text)}: no such file{suffix}")
            return None
        except (OSError, RuntimeError) as exc:
            self.log.add_repeated(where, "unreadable", f"{show(text)}: {_reason(exc)}{suffix}")
            return None
        except ValueError:  # a NUL character ("\0" in a double-quoted YAML string)
            self.log.add_repeated(
                where, "invalid path", f"{show(text)}: not a valid path (a NUL character){suffix}"
            )
            return None
        if real not in self._files:
            self._files[real] = self._check(real, text)
        found = self._files[real]
        if isinstance(found, str):
            kind = found.split(":", 1)[0]
            self.log.add_repeated(where, kind, f"{show(text)}: {found}{suffix}")
            return None
        return found

    def _check(self, real: Path, text: str) -> LocalFile | str:
        """The file at ``real``, or what is wrong with it (``kind: details``)."""
        if not self.allowed(real):
            return (
                "outside the allowed folders: a local image must be in the manifest's folder "
                "or below it, or under a root listed in local_images.roots"
            )
        if real.is_dir():
            return "not a regular file: a folder (to send each picture in it, use files:)"
        if not real.is_file():
            return "not a regular file"
        try:
            size = real.stat().st_size
            if size > self.rules.max_bytes:
                # In bytes: "10.0 MB, over the 10 MB cap" would not say why.
                cap = self.rules.max_bytes
                return (
                    f"too large: {size:,} bytes, over the cap of {cap:,} bytes "
                    f"(local_images.max_file_mb: {cap / 1_000_000:g})"
                )
            with real.open("rb") as handle:
                media_type = sniff(handle.read(12))
            if media_type is None:
                return "not a picture: its bytes are not PNG, JPEG or WebP, whatever its name"
            sha256, size = hash_file(real)
        except OSError as exc:
            return f"unreadable: {_reason(exc)}"
        return LocalFile(self.shown(real), sha256, size, media_type, real)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return "cannot be read"


def read_local_rules(raw: Mapping[str, Any], base: Path) -> LocalRules:
    """The ``local_images:`` section (already checked by the schema)."""
    roots = [base.resolve()]
    for root in raw.get("roots") or ():
        expanded = Path(os.path.expanduser(str(root)))
        roots.append((expanded if expanded.is_absolute() else base / expanded).resolve())
    max_mb = float(raw.get("max_file_mb", DEFAULT_MAX_FILE_MB))
    return LocalRules(tuple(roots), int(max_mb * 1_000_000))


def read_upload(raw: Mapping[str, Any], log: ProblemLog) -> UploadSpec | None:
    """The ``upload:`` section (its shape already checked by the schema); None after reporting
    what the schema cannot say."""
    here: PathKey = ("upload",)
    methods = [name for name in ("s3", "command", "base_url") if name in raw]
    if len(methods) != 1:
        said = ", ".join(methods) if methods else "none"
        log.add(here, f"say exactly one of s3, command or base_url (found: {said})")
        return None
    method: S3Spec | CommandSpec | BaseUrlSpec
    lifetime: float | None = raw.get("url_lifetime")
    if "s3" in raw:
        s3 = raw["s3"]
        method = S3Spec(
            bucket=s3["bucket"],
            prefix=s3.get("prefix", ""),
            endpoint_url=s3.get("endpoint_url"),
            region=s3.get("region"),
        )
    elif "command" in raw:
        argv = tuple(str(arg) for arg in raw["command"])
        ok = True
        used: set[str] = set()
        for number, arg in enumerate(argv):
            # The arguments are templates like a job's fields: {{ and }} are literal braces.
            try:
                names = parse_template(arg).names
            except TemplateError as exc:
                log.add((*here, "command", number), str(exc))
                ok = False
                continue
            used |= names
            for name in sorted(names - set(COMMAND_PLACEHOLDERS)):
                log.add(
                    (*here, "command", number),
                    f"unknown placeholder {{{name}}} (known: "
                    f"{', '.join('{' + p + '}' for p in COMMAND_PLACEHOLDERS)})",
                )
                ok = False
        if ok and "path" not in used:
            log.add((*here, "command"), "the command must take the file as {path}")
            ok = False
        if not ok:
            return None
        method = CommandSpec(argv, timeout=float(raw.get("command_timeout", 300.0)))
    else:
        base_url = str(raw["base_url"])
        parts = urlsplit(base_url)
        if parts.query or parts.fragment:
            log.add((*here, "base_url"), "base_url must not have a query or a fragment")
            return None
        method = BaseUrlSpec(base_url if base_url.endswith("/") else base_url + "/")
        lifetime = None
    return UploadSpec(
        method,
        url_lifetime=float(lifetime) if lifetime is not None else None,
        concurrency=int(raw.get("concurrency", DEFAULT_UPLOAD_CONCURRENCY)),
    )
