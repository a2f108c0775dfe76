"""A job entry's ``rows``: variables from a CSV file or from an inline list of mappings."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruxa_batch.errors import Problem
from ruxa_batch.jobs import display_path
from ruxa_batch.manifest_problems import REPEAT_LIMIT, ProblemLog
from ruxa_batch.schema import (
    KEY_VALUE_MESSAGE,
    SECRET_HOME,
    is_secret_name,
    looks_like_key,
    secret_home,
)
from ruxa_batch.suggest import show
from ruxa_batch.yamlsource import PathKey, YamlProblem, json_path, read_text

# Rows with the wrong number of fields reported one by one; the rest are counted.
RAGGED_SHOWN = 20


@dataclass
class Rows:
    """Variables from a job's ``rows`` (CSV file or inline list)."""

    names: tuple[str, ...]
    values: list[tuple[str, ...]]
    labels: list[str]  # per row, e.g. "products.csv:4"


def scalar_text(value: Any) -> str:
    """A YAML scalar as the text a template substitutes (``true``, ``3`` rather than ``3.0``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e16 else str(value)
    return str(value)


class RowReader:
    """Reads ``rows`` values of one manifest; a CSV file used by several entries is read once."""

    def __init__(self, base: Path, log: ProblemLog) -> None:
        self.base = base  # the manifest's folder: CSV paths are relative to it
        self.log = log
        self._csv_cache: dict[Path, Rows | None] = {}

    def read(self, raw: Any, where: PathKey) -> Rows | None:
        """The rows of ``raw`` (a list of mappings or a CSV path); None after reporting why not."""
        if isinstance(raw, list):
            return self._inline(raw, where)
        csv_path = self.base / str(raw)
        if not _inside(csv_path, self.base):
            # Else a manifest could read any file the user can (its first line is echoed as the
            # header) and send its values in prompts.
            self.log.add(
                where,
                f"{show(str(raw))} is outside the manifest's folder; a rows CSV file must be in "
                "that folder or below it",
            )
            return None
        if csv_path not in self._csv_cache:
            self._csv_cache[csv_path] = self._csv(csv_path, where)
        return self._csv_cache[csv_path]

    def _inline(self, raw: list[Any], where: PathKey) -> Rows | None:
        names = tuple(dict.fromkeys(name for row in raw for name in row))
        values, labels = [], []
        for number, row in enumerate(raw):
            missing = [name for name in names if name not in row]
            if missing:
                self.log.add(
                    (*where, number),
                    f"row is missing {', '.join(map(repr, missing))} "
                    "(every row needs the same keys)",
                )
                return None
            values.append(tuple(scalar_text(row[name]) for name in names))
            labels.append(f"rows[{number}]")
        return Rows(names, values, labels)

    def _csv(self, csv_path: Path, where: PathKey) -> Rows | None:
        shown = display_path(csv_path)
        jpath = json_path(where)

        def fail(message: str, line: int = 0) -> None:
            if line:
                self.log.append(Problem(shown, line, 1, jpath, message))
            else:
                self.log.add(where, f"{shown}: {message}")

        try:
            text = read_text(csv_path, display=shown, what="CSV file")
        except YamlProblem as exc:
            fail(exc.problem.message, exc.problem.line)
            return None
        secrets = _secret_problems(text, shown, jpath)
        if secrets:
            # Reported before anything else: the other messages may quote a cell.
            for problem in secrets:
                self.log.append(problem)
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
                    self.log.append(
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
            ragged = 0
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue  # blank lines
                if len(row) != len(names):
                    # Every ragged row is reported (up to a few, then counted), not the first.
                    ragged += 1
                    if ragged <= RAGGED_SHOWN:
                        fail(
                            f"row has {len(row)} field{'s' if len(row) != 1 else ''}; the "
                            f"header has {len(names)}",
                            reader.line_num,
                        )
                    continue
                values.append(tuple(row))
                labels.append(f"{csv_path.name}:{reader.line_num}")
        except csv.Error as exc:
            reason = str(exc)
            if reason == "unexpected end of data":
                reason = "a quoted field is never closed"
            fail(f"malformed CSV: {reason}", reader.line_num)
            return None
        if ragged > RAGGED_SHOWN:
            more = ragged - RAGGED_SHOWN
            fail(
                f"... and {more:,} more row{'s' if more != 1 else ''} with the wrong number "
                "of fields"
            )
        if ragged:
            return None
        if not values:
            fail("CSV file has a header but no rows", 1)
            return None
        return Rows(names, values, labels)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is in ``folder`` or below it once symbolic links are followed."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symbolic link loop
        return False


def _names_secret(cell: str) -> str | None:
    """The secret name in a header cell such as ``api_key``, or a ``.env`` line such as
    ``RUXA_API_KEY=...``; None when it names none."""
    return next((p for p in re.split(r"[=:\s]+", cell) if p and is_secret_name(p)), None)


def _secret_problems(text: str, shown: str, jpath: str) -> list[Problem]:
    """Key-shaped cells and secret column names in a CSV file, the same check as the
    manifest's; no message repeats the cell. A malformed file is left to the main reading."""
    found: list[Problem] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = True
    try:
        for row in reader:
            for column, cell in enumerate(row, start=1):
                if looks_like_key(cell):
                    message = (
                        f"column {column} of the header looks like a Ruxa API key; {SECRET_HOME}"
                        if header
                        else KEY_VALUE_MESSAGE
                    )
                elif header and (name := _names_secret(cell)):
                    message = f"column {column} of the header names a secret; {secret_home(name)}"
                else:
                    continue
                found.append(Problem(shown, reader.line_num, column, jpath, message))
            header = False
    except csv.Error:
        pass
    if len(found) > REPEAT_LIMIT:
        more = len(found) - REPEAT_LIMIT
        first = found[REPEAT_LIMIT]
        summary = f"... and {more:,} more cell{'s' if more != 1 else ''} that look like secrets"
        found = [*found[:REPEAT_LIMIT], Problem(shown, first.line, first.col, jpath, summary)]
    return found
