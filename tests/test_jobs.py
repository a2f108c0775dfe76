"""The job model stands apart from the manifest language."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruxa_batch.jobs import Job, Jobs, render_filename, unsuffixed
from ruxa_batch.local_files import LocalFile

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


def test_packed_jobs_read_back_as_they_were_added(tmp_path: Path) -> None:
    photo = LocalFile("photos/a.png", "a" * 64, 12, "image/png", tmp_path / "photos/a.png")
    other = LocalFile("photos/b.png", "b" * 64, 34, "image/png", tmp_path / "photos/b.png")
    jobs = [
        Job("a", 1, 2, "Prompt é", ("https://x/a.png", photo), "1:1", "png", "k1", "jobs[0]"),
        Job("a", 2, 2, "Prompt é", ("https://x/a.png", photo), "1:1", "png", "k2", "jobs[0]"),
        Job("b", 1, 1, "", (other, photo), "16:9", "jpeg", "k3", "jobs[1], line 9"),
        Job("c", 1, 1, "p", (), "auto", "png", "k4", ""),
    ]
    packed = Jobs(jobs)
    assert list(packed) == jobs and len(packed) == 4
    assert packed[2] == jobs[2] and packed[-1] == jobs[-1]
    assert list(packed[1:3]) == jobs[1:3] and packed == jobs
    assert packed[2].images[1].path == photo.path  # the file itself, not a copy by value only
    with pytest.raises(IndexError):
        packed[4]


@given(
    st.lists(st.one_of(st.text(alphabet="ab{}:. ", max_size=5), st.sampled_from(["{x}", "{y_1}"]))),
    st.text(),
    st.text(),
)
def test_templates_render_literal_text_and_values_as_they_are(
    pieces: list[str], x: str, y: str
) -> None:
    from ruxa_batch.template import parse_template

    names = {"{x}": x, "{y_1}": y}
    source = "".join(
        piece if piece in names else piece.replace("{", "{{").replace("}", "}}") for piece in pieces
    )
    expected = "".join(names.get(piece, piece) for piece in pieces)
    assert parse_template(source).render({"x": x, "y_1": y, "unused": "z"}) == expected
    slug = parse_template(source).render({"x": x, "y_1": y}, transform=str.upper)
    assert slug == "".join(names[p].upper() if p in names else p for p in pieces)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
    st.integers(min_value=1, max_value=16),
)
def test_identity_is_the_hash_of_the_canonical_json(value: object, variant: int) -> None:
    """The identity of every job ever recorded depends on these exact bytes."""
    import hashlib
    import json

    from ruxa_batch.jobs import identity_key

    document = {"model": "m", "input": {"value": value}, "variant": variant}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]
    assert identity_key("m", {"value": value}, variant) == expected
