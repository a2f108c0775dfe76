"""The pictures in the output folder: whether a file still holds a job's own picture, and the one
place that moves a picture out of another job's way.

A file is a job's picture only if its bytes are the ones recorded when it was downloaded (its
size, then its sha256): a file that merely exists under the right name may hold another job's
picture, after a prompt was edited and reverted or a job renamed and its id given to a new one.

A picture of another identity is never overwritten. Before a job writes a name that the state
records for another identity whose picture is still there, :class:`Ledger` moves that picture
to a name of its own: the name the other job has now when it is still in the manifest (a renamed
job's picture follows its rename), else its old name with the start of its identity key added
before the extension (``x-1.png`` becomes ``x-1.3fa2b1c9.png``).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from ruxa_batch.jobs import Job, Manifest, display_path
from ruxa_batch.state import JobRecord, StateStore

# Characters of the identity key added to the name of a picture moved out of the way.
ASIDE_KEY_CHARS = 8
_CHUNK = 1 << 20


class FileCheck(str, Enum):
    """What a recorded picture's file holds now."""

    OK = "ok"  # the recorded bytes
    MISSING = "missing"  # no file (or not a readable regular file)
    CHANGED = "changed"  # other bytes

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True, slots=True)  # one per job: no __dict__ each
class Picture:
    """One recorded output file of a job."""

    name: str  # relative to the output folder, '/'-separated
    sha256: str
    size: int | None  # None in records written before sizes were kept


def check_file(path: Path, sha256: str, size: int | None) -> FileCheck:
    """Whether ``path`` holds the picture recorded as ``sha256`` (and ``size``)."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            return FileCheck.MISSING
        if size is not None and status.st_size != size:
            return FileCheck.CHANGED  # no need to read it
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return FileCheck.MISSING
    return FileCheck.OK if digest.hexdigest() == sha256 else FileCheck.CHANGED


def holds(path: Path, picture: Picture) -> bool:
    """Whether ``path`` holds ``picture``'s bytes."""
    return check_file(path, picture.sha256, picture.size) == FileCheck.OK


def pictures_of(record: JobRecord) -> tuple[Picture, ...]:
    """A job's recorded pictures, in output order (none if the record is inconsistent)."""
    if len(record.sha256) != len(record.files):
        return ()
    sizes: Sequence[int | None] = (
        record.sizes if len(record.sizes) == len(record.files) else (None,) * len(record.files)
    )
    return tuple(
        Picture(name, digest, size)
        for name, digest, size in zip(record.files, record.sha256, sizes, strict=True)
    )


def aside_name(name: str, key: str) -> str:
    """``name`` with the start of identity ``key`` before its extension: ``x-1.3fa2b1c9.png``."""
    tag = key[:ASIDE_KEY_CHARS]
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{tag}.{ext}" if dot and stem and "/" not in ext else f"{name}.{tag}"


def _fold(name: str) -> str:
    # Names that differ only in case are one file on macOS and Windows.
    return name.casefold()


class Ledger:
    """Which identity the state says each file of the output folder belongs to, kept current
    during one run; the one place a picture is moved (the state follows each move at once)."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        store: StateStore,
    ) -> None:
        records = store.job_records()
        self.root = root
        self.manifest = manifest
        self.store = store
        self.jobs = {job.key: job for job in manifest.jobs}
        self.old_ids = {key: record.id for key, record in records.items()}
        self.pictures: dict[str, list[Picture]] = {}
        self.claims: dict[str, set[str]] = {}  # folded name -> identity keys recording it
        for key, record in records.items():
            self._claim(key, pictures_of(record))

    def _claim(self, key: str, pictures: Sequence[Picture]) -> None:
        if pictures:
            self.pictures[key] = list(pictures)
        for picture in pictures:
            self.claims.setdefault(_fold(picture.name), set()).add(key)

    def own_copy(self, job: Job, index: int, name: str) -> Picture | None:
        """Where output ``index`` (0-based) of ``job``, as recorded, is on disk: under its
        recorded name, or already under ``name`` (its name now); None if neither holds it."""
        pictures = self.pictures.get(job.key, [])
        if index >= len(pictures):
            return None
        recorded = pictures[index]
        for candidate in dict.fromkeys((recorded.name, name)):
            path = self.root / candidate
            if holds(path, recorded):
                size = recorded.size if recorded.size is not None else path.stat().st_size
                return Picture(candidate, recorded.sha256, size)
        return None

    def make_room(self, job: Job, name: str) -> str | None:
        """Before ``job`` writes ``name``: move any other identity's picture found there to a
        name of its own. None when the way is clear; else why not (nothing was touched)."""
        for key in sorted(self.claims.get(_fold(name), ())):
            if key == job.key:
                continue
            picture = next(p for p in self.pictures[key] if _fold(p.name) == _fold(name))
            if not holds(self.root / picture.name, picture):
                continue  # the file no longer holds that job's picture: nothing of it to keep
            target = self._free_name(key, picture.name)
            if target is None:
                return (
                    f"{display_path(self.root / name)} holds the picture of {self._who(key)} "
                    "and no free name is left to keep it under; nothing was overwritten: "
                    "move that file away and run again"
                )
            self.move(key, picture.name, target)
        return None

    def _free_name(self, key: str, name: str) -> str | None:
        """A name for ``key``'s picture now at ``name``: its job's name now, else aside."""
        candidates = []
        job = self.jobs.get(key)
        if job is not None:
            index = [p.name for p in self.pictures[key]].index(name)
            candidates.append(self.manifest.output_name(job, index + 1))
        candidates.append(aside_name(name, key))
        root = self.root.resolve()
        for candidate in candidates:
            path = (self.root / candidate).resolve()
            if (
                _fold(candidate) != _fold(name)
                and path.is_relative_to(root)
                and not os.path.lexists(path)
            ):
                return path.relative_to(root).as_posix()
        return None

    def _who(self, key: str) -> str:
        job = self.jobs.get(key)
        if job is not None:
            return f"job {job.id!r}" + (f" variant {job.variant}" if job.variants > 1 else "")
        return f"job {self.old_ids.get(key, key)!r} (an earlier request, no longer in the manifest)"

    def move(self, key: str, old: str, new: str) -> None:
        """Move one of ``key``'s pictures from ``old`` to ``new``; the state records it at once."""
        target = self.root / new
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / old, target)
        self.store.rename_file(key, old, new)
        self.pictures[key] = [
            replace(p, name=new) if p.name == old else p for p in self.pictures[key]
        ]
        self.claims.get(_fold(old), set()).discard(key)
        self.claims.setdefault(_fold(new), set()).add(key)

    def recorded(self, key: str, pictures: Sequence[Picture]) -> None:
        """``key``'s pictures as the state now records them."""
        for picture in self.pictures.pop(key, []):
            self.claims.get(_fold(picture.name), set()).discard(key)
        self._claim(key, pictures)
