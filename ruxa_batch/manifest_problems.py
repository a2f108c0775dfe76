"""The problems found in one manifest, collected so that every one is reported at once."""

from __future__ import annotations

from ruxa_batch.errors import Problem
from ruxa_batch.yamlsource import Document, PathKey

# The same problem in many expansions of one field is reported this many times, then summarised.
REPEAT_LIMIT = 3


class ProblemLog:
    """Problems of one document, each located at a line; long runs of one problem summarised."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []
        self._repeats: dict[tuple[PathKey, str], int] = {}

    def __len__(self) -> int:
        return len(self.problems)

    def add(self, path: PathKey, message: str, *, key: bool = False) -> None:
        """Report a problem at ``path`` (at its key rather than its value with ``key``)."""
        self.problems.append(self.doc.problem(path, message, key=key))

    def append(self, problem: Problem) -> None:
        """Report a problem located elsewhere (in a CSV file, say)."""
        self.problems.append(problem)

    def extend(self, problems: list[Problem]) -> None:
        """Report problems found by another check (the schema)."""
        self.problems.extend(problems)

    def add_repeated(self, path: PathKey, kind: str, message: str) -> None:
        """Report a problem found in an expansion, summarising long runs of the same one."""
        count = self._repeats.get((path, kind), 0) + 1
        self._repeats[(path, kind)] = count
        if count <= REPEAT_LIMIT:
            self.add(path, message)

    def summarise_repeats(self) -> None:
        """Add one line per run of :meth:`add_repeated` problems that went past the limit."""
        for (path, kind), count in self._repeats.items():
            if count > REPEAT_LIMIT:
                more = count - REPEAT_LIMIT
                self.add(
                    path,
                    f"... and {more:,} more expansion{'s' if more != 1 else ''} "
                    f"with the same problem ({kind})",
                )


def ordered(problems: list[Problem]) -> list[Problem]:
    """``problems`` without duplicates, in file and line order."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.file, p.line, p.col))
