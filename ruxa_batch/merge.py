"""Merge: the output folders of ``run --shard I/N`` runs combined into one output folder.

Rules, all checked before anything is written (each a one-line error, exit 2):

- each folder given holds one or more shard state files (``.ruxa-batch.shard-I-of-N.sqlite``);
- every shard is of the same split (one N), and none is given twice;
- every shard ran the manifest's current revision (:func:`ruxa_batch.shards.manifest_revision`)
  against the same endpoint, and holds only jobs of its own shard;
- every shard of the split is there, unless ``--partial`` (the missing shards' jobs are then
  pending in the merged folder, and a later ``run`` makes them);
- the destination is absent, empty, or the manifest's own output folder without a state file;
  a file already there under a picture's name must hold that picture's bytes.

Nothing of a shard is dropped: every row of its jobs, runs, attempts, tasks, earlier takes and
uploads goes into the merged state file (:meth:`StateStore.absorb`), and every recorded picture,
earlier takes' under ``history/`` included, is hard-linked (or copied, across file systems)
into the merged folder. The merged state and pictures are built in a temporary folder beside
the destination and moved into place, the state file last; then ``results.csv``,
``results.json`` and ``report.html`` are written from it. The shard folders are only read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ruxa_batch.errors import EXIT_OK, UsageError, cannot_write, emit
from ruxa_batch.jobs import Manifest, display_path, job_keys, output_dir_for
from ruxa_batch.manifest import load_manifest
from ruxa_batch.pictures import FileCheck, Picture, check_file, pictures_of
from ruxa_batch.report import REPORT_FILENAME, report_writer
from ruxa_batch.results import build_table, write_results
from ruxa_batch.settings import MergeSettings
from ruxa_batch.shards import (
    META_REVISION,
    META_SHARD,
    Shard,
    manifest_revision,
    scope_of,
    scope_text,
    shard_of,
    shard_of_state_name,
    split,
)
from ruxa_batch.state import STATE_FILENAME, StateStore, held

ENDPOINT_META = "endpoint"
MERGED_META = "merged_shards"
SANDBOX_ENDPOINT = "sandbox"


@dataclass(frozen=True)
class ShardState:
    """One shard's state file, as found in a folder given to ``merge``."""

    shard: Shard
    path: Path
    revision: str | None
    endpoint: str | None

    @property
    def folder(self) -> Path:
        """Where the shard's pictures are."""
        return self.path.parent

    def shown(self) -> str:
        """``shard 2/4 (shards/shard-2)``."""
        return f"shard {self.shard} ({display_path(self.folder)})"


def merge_shards(settings: MergeSettings) -> int:
    """``ruxa-batch merge``: check the shards, then build and install the merged folder."""
    manifest = load_manifest(settings.path, max_jobs=settings.max_jobs)
    found = find_shards(settings.folders)
    count = check_shards(manifest, found, partial=settings.partial)
    sandbox = _check_endpoint(found, sandbox=settings.sandbox, explicit=settings.output)
    own = output_dir_for(manifest.output.dir, sandbox=sandbox)
    destination = settings.output if settings.output is not None else own
    check_destination(destination, own=own)
    present = {state.shard for state in found}
    missing = [Shard(i, count) for i in range(1, count + 1) if Shard(i, count) not in present]
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.merge-", dir=destination.parent))
    except OSError as exc:
        raise cannot_write(display_path(destination), exc) from None
    try:
        with contextlib.ExitStack() as locks:
            # A shard still running would go on creating tasks the merged state never hears
            # of, and a run of the merged state would pay for them again.
            for shard in found:
                locks.enter_context(held(shard.path))
            state = temp / STATE_FILENAME
            _merge_states(found, state, temp, revision=manifest_revision(manifest))
            pictures, absent = _link_pictures(found, state, temp, count=count)
            _check_room(temp, destination)
            _check_missing(state, temp, destination)
            _install(temp, destination)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return _write_outputs(
        manifest,
        destination,
        found=found,
        missing=missing,
        pictures=pictures,
        absent=absent,
        report=settings.report,
    )


def find_shards(folders: Sequence[Path]) -> list[ShardState]:
    """The shard state files in ``folders`` (each folder given once), read only."""
    found: list[ShardState] = []
    seen: set[Path] = set()
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"{display_path(folder)} is not a folder")
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        files = sorted(
            path
            for path in folder.glob(".ruxa-batch.shard-*.sqlite")
            if shard_of_state_name(path.name) is not None
        )
        if not files:
            raise UsageError(
                f"{display_path(folder)} holds no shard state file "
                "(.ruxa-batch.shard-I-of-N.sqlite, written by `run --shard I/N`)"
            )
        for path in files:
            store = StateStore(path, readonly=True)
            try:
                recorded = scope_of(store.get_meta(META_SHARD))
                shard = recorded or shard_of_state_name(path.name)
                assert shard is not None  # the name matched
                found.append(
                    ShardState(
                        shard, path, store.get_meta(META_REVISION), store.get_meta(ENDPOINT_META)
                    )
                )
            finally:
                store.close()
    return found


def check_shards(manifest: Manifest, found: Sequence[ShardState], *, partial: bool) -> int:
    """Refuse shards that do not make one split of this manifest; returns N."""
    by_index: dict[Shard, ShardState] = {}
    for state in found:
        first = found[0]
        if state.shard.count != first.shard.count:
            raise UsageError(
                f"{state.shown()} and {first.shown()} are of different splits: merge shards "
                "of one --shard I/N split"
            )
        if state.shard in by_index:
            raise UsageError(
                f"shard {state.shard} is there twice: in {display_path(by_index[state.shard].path)}"
                f" and {display_path(state.path)}"
            )
        by_index[state.shard] = state
    revision = manifest_revision(manifest)
    for state in found:
        if state.revision != revision:
            raise UsageError(
                f"{state.shown()} ran manifest revision {state.revision or '(none recorded)'}, not "
                f"{display_path(manifest.path)} as it is now ({revision}): run that shard "
                "again with this manifest (it resumes), or merge with the manifest it ran"
            )
    count = found[0].shard.count
    missing = [Shard(i, count) for i in range(1, count + 1) if Shard(i, count) not in by_index]
    if missing and not partial:
        parts = split(manifest, count)
        jobs = sum(len(parts[shard.index - 1].jobs) for shard in missing)
        named = ", ".join(str(shard) for shard in missing)
        which = "shard" if len(missing) == 1 else "shards"
        raise UsageError(
            f"{which} {named} missing (no .ruxa-batch.shard-I-of-{count}.sqlite in the folders "
            f"given): pass its folder, or --partial to merge without it ({jobs:,} jobs stay "
            "pending)"
        )
    for state in found:
        store = StateStore(state.path, readonly=True)
        try:
            strays = [key for key in store.job_keys() if not state.shard.holds(key)]
        finally:
            store.close()
        if strays:
            raise UsageError(
                f"{state.shown()} records {len(strays):,} jobs of other shards (e.g. key "
                f"{strays[0]}): its state file was not written by `run --shard {state.shard}`"
            )
    return count


def _check_endpoint(found: Sequence[ShardState], *, sandbox: bool, explicit: Path | None) -> bool:
    """All shards ran against one endpoint (their task IDs mean nothing elsewhere); returns
    whether it is the sandbox (whose runs have their own output folder)."""
    endpoints = {state.endpoint for state in found if state.endpoint is not None}
    if len(endpoints) > 1:
        raise UsageError(
            "the shards ran against different endpoints ("
            + ", ".join(sorted(endpoints))
            + "): merge only shards of one endpoint"
        )
    on_sandbox = endpoints == {SANDBOX_ENDPOINT}
    if explicit is None and endpoints and on_sandbox != sandbox:
        if on_sandbox:
            raise UsageError("the shards ran with --sandbox: add --sandbox (or choose -o DIR)")
        raise UsageError("the shards did not run with --sandbox: leave out --sandbox")
    return sandbox


def check_destination(destination: Path, *, own: Path) -> None:
    """The merged folder must be new, empty, or the manifest's own without a state file."""
    if destination.exists() and not destination.is_dir():
        raise UsageError(f"{display_path(destination)} is not a folder")
    if not destination.exists() or not any(destination.iterdir()):
        return
    if (destination / STATE_FILENAME).exists():
        raise UsageError(
            f"{display_path(destination)} already holds a state file ({STATE_FILENAME}): "
            "merge into another folder with -o DIR, or move that one away"
        )
    if destination.resolve() != own.resolve():
        raise UsageError(
            f"{display_path(destination)} is not empty: merge into a new or empty folder, or "
            "into the manifest's own output folder"
        )


def _merge_states(found: Sequence[ShardState], target: Path, temp: Path, *, revision: str) -> None:
    """One state file holding every row of every shard's."""
    merged = StateStore(target)
    try:
        for number, state in enumerate(sorted(found, key=lambda s: s.shard)):
            copy = temp / f".shard-{number}.sqlite"
            StateStore.snapshot(state.path, copy)
            merged.absorb(copy)
            for suffix in ("", "-wal", "-shm"):
                copy.with_name(copy.name + suffix).unlink(missing_ok=True)
        endpoint = next((state.endpoint for state in found if state.endpoint), None)
        if endpoint is not None:
            merged.set_meta(ENDPOINT_META, endpoint)
        merged.set_meta(META_SHARD, scope_text(None))
        merged.set_meta(META_REVISION, revision)
        merged.set_meta(MERGED_META, ",".join(str(s.shard) for s in sorted(found, key=_by_shard)))
    finally:
        merged.close()


def _by_shard(state: ShardState) -> Shard:
    return state.shard


def _recorded_pictures(store: StateStore) -> Iterator[tuple[str, Picture]]:
    """Every picture the state records, by job key: current takes and earlier ones."""
    for key, record in store.job_records().items():
        for picture in pictures_of(record):
            yield key, picture
    for key, takes in store.takes().items():
        for take in takes:
            if len(take.files) == len(take.sha256):
                for name, digest in zip(take.files, take.sha256, strict=True):
                    yield key, Picture(name, digest, None)


def _safe(name: str) -> bool:
    """A recorded name that stays inside the output folder."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _link_pictures(
    found: Sequence[ShardState], state: Path, temp: Path, *, count: int
) -> tuple[int, int]:
    """Hard-link (or copy) every recorded picture from its shard's folder into ``temp``;
    returns how many were placed and how many were missing or changed in the shard folders
    (their records are kept: the next ``run`` downloads them again)."""
    folders = {s.shard.index: s.folder for s in found}
    placed = absent = 0
    store = StateStore(state, readonly=True)
    try:
        for key, picture in _recorded_pictures(store):
            folder = folders.get(shard_of(key, count))
            source = folder / picture.name if folder is not None else None
            if (
                source is None
                or not _safe(picture.name)
                or check_file(source, picture.sha256, picture.size) != FileCheck.OK
            ):
                absent += 1
                continue
            target = temp / picture.name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copy2(source, target)
            except OSError as exc:
                raise cannot_write(display_path(target), exc) from None
            placed += 1
    finally:
        store.close()
    return placed, absent


def _files(folder: Path) -> Iterator[Path]:
    """Every file under ``folder``, relative to it; the state file last."""
    state = None
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        relative = path.relative_to(folder)
        if relative == Path(STATE_FILENAME):
            state = relative
        else:
            yield relative
    if state is not None:
        yield state


def _same_bytes(first: Path, second: Path) -> bool:
    try:
        if os.path.samefile(first, second):
            return True
        if first.stat().st_size != second.stat().st_size:
            return False
        return first.read_bytes() == second.read_bytes()
    except OSError:
        return False


def _check_room(temp: Path, destination: Path) -> None:
    """No file in ``destination`` would be replaced by different bytes."""
    if not destination.exists():
        return
    for relative in _files(temp):
        there = destination / relative
        if there.exists() and not _same_bytes(temp / relative, there):
            raise UsageError(
                f"{display_path(there)} already exists with other bytes than the picture "
                "merged there: merge into another folder with -o DIR, or move it away"
            )


def _check_missing(state: Path, temp: Path, destination: Path) -> None:
    """No file in ``destination`` stands under the name of a recorded picture the shards did
    not have (the next ``run`` would download it there) unless it is that picture."""
    if not destination.exists():
        return
    store = StateStore(state, readonly=True)
    try:
        for _key, picture in _recorded_pictures(store):
            there = destination / picture.name
            if (
                _safe(picture.name)
                and not (temp / picture.name).exists()
                and os.path.lexists(there)
                and check_file(there, picture.sha256, picture.size) != FileCheck.OK
            ):
                raise UsageError(
                    f"{display_path(there)} already exists with other bytes than the picture "
                    "recorded under that name: merge into another folder with -o DIR, or move "
                    "it away"
                )
    finally:
        store.close()


def _install(temp: Path, destination: Path) -> None:
    """Move the merged folder into place: a rename when the destination is new or empty,
    else file by file with the state file last (an identical file already there stays)."""
    try:
        if destination.exists() and not any(destination.iterdir()):
            destination.rmdir()
        if not destination.exists():
            os.replace(temp, destination)
            temp.mkdir()  # for the caller's clean-up
            return
        for relative in _files(temp):
            there = destination / relative
            if there.exists():
                continue  # the same bytes (checked before)
            there.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp / relative, there)
    except OSError as exc:
        raise cannot_write(display_path(destination), exc) from None


def _write_outputs(
    manifest: Manifest,
    destination: Path,
    *,
    found: Sequence[ShardState],
    missing: Sequence[Shard],
    pictures: int,
    absent: int,
    report: bool,
) -> int:
    """results.csv, results.json and report.html of the merged folder, and the summary."""
    with StateStore(destination / STATE_FILENAME, readonly=True) as store:
        counted = store.tally(job_keys(manifest.jobs))
        table = build_table(manifest, store.records_of, store.takes(), tally=counted)
        tally = table.counts()
        summary: dict[str, Any] = {
            **tally,
            "jobs": len(table.rows),
            "possible_duplicates": table.possible_duplicates(),
            "merged_shards": [str(s.shard) for s in sorted(found, key=_by_shard)],
            "missing_shards": [str(shard) for shard in missing],
            "pictures_merged": pictures,
            "pictures_missing": absent,
        }
        report_file = destination / REPORT_FILENAME
        make = report_writer(
            output_dir=destination, destination=report_file, history=store.history()
        )
        paths = write_results(
            table, destination, summary, also=[(report_file, make)] if report else []
        )
    counts = ", ".join(f"{count:,} {status}" for status, count in tally.items() if count)
    count = found[0].shard.count
    lines = [
        f"merged {len(found)} of {count} shards into {display_path(destination)}: "
        f"{len(table.rows):,} jobs ({counts}); {pictures:,} pictures",
        *(f"{path.stem}: {display_path(path)}" for path in paths),
    ]
    if missing:
        lines.append(
            "missing: shard "
            + ", ".join(str(shard) for shard in missing)
            + " (their jobs are pending: `ruxa-batch run` on this folder makes them, or merge "
            "again with their folders)"
        )
    if absent:
        lines.append(
            f"{absent:,} recorded pictures were missing or changed in the shard folders; their "
            "records are kept: `ruxa-batch run` on the merged folder downloads them again"
        )
    emit(lines, sys.stdout)
    return EXIT_OK
