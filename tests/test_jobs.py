"""The job model stands apart from the manifest language."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ruxa_batch.jobs import Job, render_filename, unsuffixed

PARSER_MODULES = ("yaml", "jsonschema", "ruxa_batch.yamlsource", "ruxa_batch.schema")


def test_job_model_imports_neither_yaml_nor_the_schema() -> None:
    code = (
        "import sys, ruxa_batch.jobs; "
        f"print(' '.join(name for name in {PARSER_MODULES!r} if name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def _job(job_id: str, ext: str = "png") -> Job:
    return Job(job_id, 1, 1, "p", ("https://x/a.png",), "1:1", ext, "k", "here")


@pytest.mark.parametrize(
    ("template", "job_id"),
    [
        ("{id}.{ext}", "a"),
        ("{id}.{ext}", "a-2"),
        ("{id}", "a.b"),
        ("x.y/{id}", "a"),
        ("{id}/pic.{ext}", "a"),
        ("{id}-v{variant}.{ext}", "a.b-3"),
    ],
)
def test_unsuffixed_inverts_the_suffix_of_later_outputs(template: str, job_id: str) -> None:
    job = _job(job_id)
    first = render_filename(template, job, 1)
    for n in (2, 3, 10, 11):
        assert unsuffixed(render_filename(template, job, n)) == (first, n)


@pytest.mark.parametrize("name", ["a.png", "a-1.png", "a-0.png", "a-02.png", "a-2.b/c", "a-x"])
def test_names_that_no_later_output_gets(name: str) -> None:
    assert unsuffixed(name) is None
