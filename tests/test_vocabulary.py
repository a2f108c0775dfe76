"""Closed sets of values are declared once: no module spells a status as a bare string."""

from __future__ import annotations

import ast
from pathlib import Path

import ruxa_batch
from ruxa_batch.statuses import AttemptOutcome, JobStatus, TaskState

PACKAGE = Path(ruxa_batch.__file__).parent
# Where the words are declared, and where they are the API's own (the client maps the API's
# words to ours once; the sandbox speaks the API).
EXEMPT = {"statuses.py", "client.py", "decide.py"}  # decide.py declares Action
# The stored words: a typo in one of them is a silent bug (a query that matches nothing).
WORDS = {member.value for enum in (JobStatus, TaskState, AttemptOutcome) for member in enum}


def words_in(source: str) -> set[str]:
    """Every status word that appears in a string literal (SQL included) of ``source``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            for word in WORDS:
                if text == word or f"'{word}'" in text:
                    found.add(word)
    return found


def test_no_module_spells_a_status_as_a_string() -> None:
    offenders = {}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in EXEMPT:
            continue
        words = words_in(path.read_text(encoding="utf-8"))
        if words:
            offenders[path.name] = sorted(words)
    assert offenders == {}


def test_the_check_finds_a_bare_status() -> None:
    assert words_in("x = 'succeeded'") == {"succeeded"}
    assert words_in("q = \"UPDATE jobs SET status = 'running'\"") == {"running"}
