"""One job entry before expansion: its fields merged over ``defaults``, its matrix and its rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ruxa_batch.manifest_files import FILE_VARIABLES, FileReader
from ruxa_batch.manifest_problems import ProblemLog
from ruxa_batch.manifest_rows import RowReader, Rows, scalar_text
from ruxa_batch.yamlsource import PathKey


@dataclass
class Entry:
    """One job entry of the manifest, before expansion."""

    index: int
    fields: dict[str, Any]
    where: dict[str, PathKey]  # field -> path of the value in the document
    matrix: dict[str, list[str]] = field(default_factory=dict)
    rows: Rows | None = None
    files: list[tuple[str, str, str]] | None = None  # (file, stem, name) per file a glob matches

    def count(self) -> int:
        """How many combinations the entry expands to, before variants."""
        total = len(self.rows.values) if self.rows else 1
        total *= len(self.files) if self.files is not None else 1
        for values in self.matrix.values():
            total *= len(values)
        return total

    def names(self) -> set[str]:
        """The variables its own expansion gives (not those of ``vars``)."""
        names = set(self.matrix) | set(self.rows.names if self.rows else ())
        return names | (set(FILE_VARIABLES) if self.files is not None else set())


def read_entry(
    index: int,
    raw: Mapping[str, Any],
    defaults: Mapping[str, Any],
    variables: Mapping[str, str],
    *,
    log: ProblemLog,
    rows: RowReader,
    files: FileReader,
) -> Entry | None:
    """The entry ``jobs[index]``, or None after reporting why it cannot be expanded."""
    here: PathKey = ("jobs", index)
    fields: dict[str, Any] = {}
    where: dict[str, PathKey] = {}
    for name, value in defaults.items():
        fields[name], where[name] = value, ("defaults", name)
    for name, value in raw.items():
        if name not in ("matrix", "rows", "files"):
            fields[name], where[name] = value, (*here, name)
    ok = True
    for required in ("prompt",):  # images: as the job's model says (see Expander.model_of)
        if required not in fields:
            log.add(
                here, f"missing required key {required!r} (set it on the job or under defaults)"
            )
            ok = False
    entry = Entry(index, fields, where)
    matrix = raw.get("matrix") or {}
    for name, values in matrix.items():
        if name in variables:
            log.add(
                (*here, "matrix", name),
                f"variable {name!r} is also defined in vars; rename one of them",
                key=True,
            )
            ok = False
        entry.matrix[name] = [scalar_text(value) for value in values]
    if "rows" in raw:
        entry.rows = rows.read(raw["rows"], (*here, "rows"))
        if entry.rows is None:
            ok = False
        else:
            for name in entry.rows.names:
                if name in variables or name in entry.matrix:
                    other = "vars" if name in variables else "matrix"
                    log.add(
                        (*here, "rows"),
                        f"rows column {name!r} is also defined in {other}; rename one of them",
                    )
                    ok = False
    if "files" in raw:
        patterns = raw["files"] if isinstance(raw["files"], list) else [raw["files"]]
        # A dict keeps the first pattern's order and drops files two patterns match, in linear
        # time (a list's "not in" was quadratic in the number of files).
        found: dict[tuple[str, str, str], None] = {}
        for number, pattern in enumerate(patterns):
            at: PathKey = (*here, "files")
            if isinstance(raw["files"], list):
                at = (*at, number)
            matched = files.glob(str(pattern), at)
            if matched is None:
                ok = False
            else:
                found.update(dict.fromkeys(matched))
        entry.files = sorted(found)  # one order for every pattern: by path
        taken = set(variables) | set(entry.matrix) | set(entry.rows.names if entry.rows else ())
        for name in FILE_VARIABLES:
            if name in taken:
                log.add(
                    (*here, "files"),
                    f"files gives the variable {name!r}, which vars, matrix or rows also "
                    "defines; rename that one",
                )
                ok = False
    return entry if ok else None
