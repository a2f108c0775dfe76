"""Which files are ruxa-batch manifests, told by their content (for the pre-commit hook).

A repository holds other YAML (CI workflows, Kubernetes objects, compose files) and the CSV files
manifests read. The hook is given whatever changed; this module picks the manifests to check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ruxa_batch.yamlsource import YamlProblem, load_yaml, read_text

YAML_SUFFIXES = (".yaml", ".yml")
# Folders never searched for manifests that read a changed CSV file.
_SKIPPED_FOLDERS = {"node_modules", "__pycache__", "venv"}


def _top_level(path: Path) -> Any:
    """The parsed document, or for YAML that does not parse, the set of its top-level keys."""
    try:
        return load_yaml(path).data
    except YamlProblem:
        pass
    try:
        text = read_text(path, display=str(path))
    except YamlProblem:
        return None
    # A broken manifest is still a manifest: the hook must report it, not skip it.
    return {line.split(":", 1)[0].strip(): None for line in text.splitlines() if line[:1].isalpha()}


def is_manifest(path: Path) -> bool:
    """A top-level mapping with both a ``version`` and a ``jobs`` key.

    Both, because each alone is common elsewhere: a GitHub Actions workflow has ``jobs``, a
    compose file has ``version``. A file that does not exist counts (``validate`` says so).
    """
    if not path.exists():
        return True
    data = _top_level(path)
    return isinstance(data, dict) and "version" in data and "jobs" in data


def rows_files(path: Path) -> set[Path]:
    """The CSV files a manifest's job entries read (``rows: FILE``), resolved."""
    try:
        data = load_yaml(path).data
    except YamlProblem:
        return set()
    jobs = data.get("jobs") if isinstance(data, dict) else None
    found = set()
    for entry in jobs if isinstance(jobs, list) else []:
        rows = entry.get("rows") if isinstance(entry, dict) else None
        if isinstance(rows, str):
            found.add((path.parent / rows).resolve())
    return found


def _yaml_files(root: Path) -> Iterator[Path]:
    for folder, folders, files in os.walk(root):
        folders[:] = sorted(
            name for name in folders if not name.startswith(".") and name not in _SKIPPED_FOLDERS
        )
        for name in sorted(files):
            if name.endswith(YAML_SUFFIXES):
                yield Path(folder) / name


def manifests_to_check(paths: Iterable[Path], *, root: Path) -> list[Path]:
    """The manifests among ``paths``, plus those under ``root`` that read a CSV among them.

    Each once, in the order first met; YAML files that are not manifests and CSV files no
    manifest reads are left out.
    """
    chosen: dict[Path, Path] = {}  # resolved -> as shown
    csv_files = set()
    for path in paths:
        if path.suffix.lower() == ".csv":
            csv_files.add(path.resolve())
        elif is_manifest(path):
            chosen.setdefault(path.resolve(), path)
    if csv_files:
        for candidate in _yaml_files(root):
            if is_manifest(candidate) and rows_files(candidate) & csv_files:
                chosen.setdefault(candidate.resolve(), candidate)
    return list(chosen.values())
