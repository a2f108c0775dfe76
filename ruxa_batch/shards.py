"""Shards: which jobs of a manifest one ``run --shard i/N`` drives, and where it keeps its state.

A job belongs to shard ``int(key, 16) % N + 1``: its identity key (a hash of the exact request
and the variant) decides, so adding or removing jobs never moves another job to another shard,
and every job is in exactly one shard of a split. Shards are 1-based, like ``jest --shard``.

Each shard keeps its own state file, ``<output.dir>/.ruxa-batch.shard-<i>-of-<N>.sqlite``, so
shards never wait for one lock and may run on other machines with their own output folder.

The **manifest revision** is the first 16 hex digits of the sha256 of the sorted identity keys of
every job of the whole manifest, one per line: it changes exactly when a job is added, removed or
its request changes (renaming a job's ``id`` keeps it). Each shard run records it with its shard
in the state's meta table; ``merge`` only combines shards that ran the same revision.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ruxa_batch.errors import UsageError
from ruxa_batch.jobs import Jobs, Manifest, display_path, job_keys
from ruxa_batch.state import STATE_FILENAME, StateStore

# The state's meta keys a run records (see ``record_scope`` in the runner).
META_SHARD = "shard"  # "2/4", or WHOLE for a run of every job
META_REVISION = "manifest_revision"
WHOLE = "all"
MAX_SHARDS = 10_000

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_STATE_NAME = re.compile(r"\.ruxa-batch\.shard-(\d+)-of-(\d+)\.sqlite")


@dataclass(frozen=True, order=True)
class Shard:
    """Shard ``index`` (1-based) of a split into ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        """Whether the job with identity ``key`` belongs to this shard."""
        return shard_of(key, self.count) == self.index

    @property
    def state_name(self) -> str:
        """The file name of this shard's state, in the output folder."""
        return f".ruxa-batch.shard-{self.index}-of-{self.count}.sqlite"

    def file_name(self, name: str) -> str:
        """``results.csv`` as this shard writes it: ``results.shard-2-of-4.csv``, so that shards
        sharing an output folder never overwrite each other's results and report."""
        stem, dot, ext = name.rpartition(".")
        return f"{stem}.shard-{self.index}-of-{self.count}.{ext}" if dot else name


def own_name(name: str, shard: Shard | None) -> str:
    """``name`` for a run of ``shard`` (the whole batch: ``name`` itself)."""
    return name if shard is None else shard.file_name(name)


def parse_shard(text: str) -> Shard:
    """``"2/4"`` as a :class:`Shard`; a one-line :class:`UsageError` for anything else."""
    match = _SPEC.fullmatch(text)
    if match is None:
        raise UsageError(f"--shard {text!r}: expected I/N, shard I of N, e.g. --shard 2/4")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or count > MAX_SHARDS:
        raise UsageError(f"--shard {text}: N must be from 1 to {MAX_SHARDS:,}")
    if index < 1 or index > count:
        raise UsageError(f"--shard {text}: I must be from 1 to {count} (shards are 1-based)")
    return Shard(index, count)


def shard_of(key: str, count: int) -> int:
    """The shard (1-based) of the job with identity ``key`` in a split into ``count``."""
    return int(key, 16) % count + 1


def shard_manifest(manifest: Manifest, shard: Shard | None) -> Manifest:
    """The manifest as a run of ``shard`` sees it: only its jobs, in manifest order."""
    if shard is None:
        return manifest
    held = (job for job in manifest.jobs if shard.holds(job.key))
    return replace(manifest, jobs=Jobs(held) if isinstance(manifest.jobs, Jobs) else list(held))


def split(manifest: Manifest, count: int) -> list[Manifest]:
    """The manifest of each shard of a split into ``count``, shard 1 first."""
    return [shard_manifest(manifest, Shard(index, count)) for index in range(1, count + 1)]


def manifest_revision(manifest: Manifest) -> str:
    """The revision of the whole manifest's set of jobs (see the module's docstring)."""
    digest = hashlib.sha256()
    for key in sorted(job_keys(manifest.jobs)):
        digest.update(key.encode("ascii") + b"\n")
    return digest.hexdigest()[:16]


def state_path(output_dir: Path, explicit: Path | None, shard: Shard | None) -> Path:
    """``--state`` if given, else the shard's state file (or the whole batch's) in the folder."""
    if explicit is not None:
        return explicit
    return output_dir / (shard.state_name if shard is not None else STATE_FILENAME)


def shard_of_state_name(name: str) -> Shard | None:
    """The shard a state file's name says it holds (None: not a shard's state file name)."""
    match = _STATE_NAME.fullmatch(name)
    if match is None:
        return None
    index, count = int(match.group(1)), int(match.group(2))
    return Shard(index, count) if 1 <= index <= count else None


def shard_states(folder: Path) -> list[Shard]:
    """The shards whose state files (by their default names) are in ``folder``, in order."""
    if not folder.is_dir():
        return []
    found = (shard_of_state_name(path.name) for path in folder.glob(".ruxa-batch.shard-*.sqlite"))
    return sorted(shard for shard in found if shard is not None)


def scope_of(meta: str | None) -> Shard | None:
    """The shard a state's meta value names (None: the whole batch)."""
    if meta is None or meta == WHOLE:
        return None
    index, _, count = meta.partition("/")
    return Shard(int(index), int(count))


def scope_text(shard: Shard | None) -> str:
    """A shard's meta value (WHOLE for a run of every job)."""
    return WHOLE if shard is None else str(shard)


def describe(shard: Shard | None) -> str:
    """``shard 2/4`` or ``the whole batch``, for messages."""
    return "the whole batch" if shard is None else f"shard {shard}"


def recorded_scope(store: StateStore) -> Shard | str | None:
    """The shard a state file was run for: a :class:`Shard`, None for the whole batch, or
    ``""`` for a file no run has claimed yet. Files from before shards existed hold the whole
    batch once a run has started in them."""
    value = store.get_meta(META_SHARD)
    if value is None:
        return None if store.history()["runs"] else ""
    return scope_of(value)


def claim_state(store: StateStore, shard: Shard | None, revision: str) -> None:
    """Check that a run of ``shard`` (None: every job) may use ``store``, and record the shard
    and the manifest revision it runs: a state file belongs to one shard of one split."""
    recorded = recorded_scope(store)
    if not isinstance(recorded, str) and recorded != shard:
        flag = f"--shard {recorded}" if isinstance(recorded, Shard) else "no --shard"
        raise UsageError(
            f"{display_path(store.path)} holds the state of {describe(recorded)}, not of "
            f"{describe(shard)}: run it with {flag}, or choose another state file with --state"
        )
    store.set_meta(META_SHARD, scope_text(shard))
    store.set_meta(META_REVISION, revision)


def check_folder(output_dir: Path, shard: Shard | None) -> None:
    """Refuse a run whose state would start from nothing beside states that hold its jobs: a
    whole-batch run in a folder of shard states (not merged yet), or a shard run beside the
    whole batch's state (merged, or run without --shard). Either would pay again for jobs that
    already have tasks. (With --state the user chose the file: not checked.)"""
    whole = output_dir / STATE_FILENAME
    if shard is None:
        shards = shard_states(output_dir)
        if shards and not whole.exists():
            listed = ", ".join(str(found) for found in shards)
            raise UsageError(
                f"{display_path(output_dir)} holds the states of shards {listed} and no state "
                "of the whole batch: a run without --shard would start from nothing and pay "
                "again for their jobs; run with --shard I/N, or merge them first "
                f"(ruxa-batch merge MANIFEST {display_path(output_dir)})"
            )
        return
    if whole.exists():
        store = StateStore(whole, readonly=True)
        try:
            has_jobs = bool(store.schema_version()) and bool(store.job_keys())
        finally:
            store.close()
        if has_jobs:
            raise UsageError(
                f"{display_path(output_dir)} holds the state of the whole batch (merged, or run "
                f"without --shard): a run of shard {shard} beside it would pay again for jobs "
                "it has; run without --shard, or give the shard its own output folder"
            )
