"""The manifest language: expansion, templates, identity, output names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruxa_batch.errors import ManifestInvalid
from ruxa_batch.jobs import Job, identity_key, render_filename
from ruxa_batch.manifest import load_manifest
from ruxa_batch.template import TemplateError, parse_template, slugify

REPO = Path(__file__).parent.parent


def write(folder: Path, text: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_example_manifest_expands_rows_matrix_defaults_and_variants() -> None:
    manifest = load_manifest(REPO / "manifests" / "example.yaml")
    assert manifest.name == "autumn-catalog"
    # 6 CSV rows x 2 settings, 6 banners, 2 hero shots x 2 variants, a backdrop from text
    assert len(manifest.jobs) == 12 + 6 + 4 + 1
    assert manifest.models() == (
        "google/nano-banana-edit",
        "google/nano-banana-pro",
        "google/nano-banana",
    )
    first = manifest.jobs[0]
    assert first.id == "mug-ember-rustic-oak-table-with-fallen-leaves"
    assert first.image_names == ("photos/mug-ember.png",)
    (photo,) = first.local_files
    assert (
        photo.sha256
        == hashlib.sha256(
            (REPO / "manifests" / "photos" / "mug-ember.png").read_bytes()
        ).hexdigest()
    )
    assert first.prompt.startswith("Place the ceramic mug in ember red on a rustic oak table")
    assert (first.image_size, first.output_format) == ("1:1", "png")  # from defaults
    banner = next(job for job in manifest.jobs if job.id == "lamp-copper-banner")
    assert (banner.image_size, banner.output_format, banner.ext) == ("21:9", "jpeg", "jpg")
    heroes = [job for job in manifest.jobs if job.id == "hero-table"]
    assert [job.variant for job in heroes] == [1, 2]
    assert heroes[0].key != heroes[1].key
    assert manifest.output.dir == REPO / "manifests" / "out" / "autumn-catalog"


def test_manifest_order_is_rows_then_matrix(hermetic: Path) -> None:
    path = write(
        hermetic,
        "version: 1\njobs:\n  - id: '{a}-{b}'\n    prompt: '{a} {b}'\n"
        "    images: ['https://x.example/i.png']\n"
        "    rows: [{a: one}, {a: two}]\n    matrix: {b: [x, y]}\n",
    )
    assert [job.id for job in load_manifest(path).jobs] == ["one-x", "one-y", "two-x", "two-y"]


def test_identity_ignores_id_and_callback_but_not_request(hermetic: Path) -> None:
    base = (
        "version: 1\n{extra}jobs:\n  - id: {id}\n    prompt: {prompt}\n"
        "    images: ['https://x.example/i.png']\n"
    )
    a = load_manifest(write(hermetic, base.format(extra="", id="a", prompt="p"), "a.yaml"))
    b = load_manifest(
        write(
            hermetic,
            base.format(extra="callback_url: https://hooks.example/x\n", id="renamed", prompt="p"),
            "b.yaml",
        )
    )
    c = load_manifest(write(hermetic, base.format(extra="", id="a", prompt="q"), "c.yaml"))
    assert a.jobs[0].key == b.jobs[0].key
    assert a.jobs[0].key != c.jobs[0].key


def test_explicit_default_size_has_the_same_identity(hermetic: Path) -> None:
    base = "version: 1\njobs:\n  - id: a\n    prompt: p\n    images: ['https://x.example/i.png']\n"
    implicit = load_manifest(write(hermetic, base, "a.yaml"))
    explicit = load_manifest(write(hermetic, base + "    image_size: '1:1'\n", "b.yaml"))
    assert implicit.jobs[0].key == explicit.jobs[0].key


def test_identity_key_is_stable() -> None:
    # Changing this value means every existing state file would resubmit every job.
    key = identity_key(
        "google/nano-banana-edit",
        {
            "prompt": "p",
            "image_urls": ["https://x.example/i.png"],
            "output_format": "png",
            "image_size": "1:1",
        },
        1,
    )
    assert key == "5934c41e99e665284cccc926"
    assert key == identity_key(
        "google/nano-banana-edit",
        {
            "image_size": "1:1",
            "output_format": "png",
            "image_urls": ["https://x.example/i.png"],
            "prompt": "p",
        },
        1,
    )


def test_values_substituted_into_id_become_slugs(hermetic: Path) -> None:
    path = write(
        hermetic,
        "version: 1\njobs:\n  - id: 'Mug_{style}'\n    prompt: 'on {style}'\n"
        "    images: ['https://x.example/i.png']\n    matrix: {style: ['White Marble!', 'a/b']}\n",
    )
    jobs = load_manifest(path).jobs
    assert [job.id for job in jobs] == ["Mug_white-marble", "Mug_a-b"]
    assert jobs[0].prompt == "on White Marble!"  # only the id is slugified


def test_literal_braces_and_templated_enums(hermetic: Path) -> None:
    path = write(
        hermetic,
        "version: 1\njobs:\n  - id: 'banner-{size_name}'\n    prompt: 'Write {{SALE}} on it'\n"
        "    images: ['https://x.example/i.png']\n    image_size: '{size}'\n"
        "    rows:\n      - {size_name: wide, size: '16:9'}\n      - {size_name: tall, size: '9:16'}\n",
    )
    jobs = load_manifest(path).jobs
    assert [(job.id, job.image_size) for job in jobs] == [
        ("banner-wide", "16:9"),
        ("banner-tall", "9:16"),
    ]
    assert jobs[0].prompt == "Write {SALE} on it"


def test_templated_enum_checked_after_expansion(hermetic: Path) -> None:
    path = write(
        hermetic,
        "version: 1\njobs:\n  - id: 'b-{size}'\n    prompt: p\n"
        "    images: ['https://x.example/i.png']\n    image_size: '{size}'\n"
        "    matrix: {size: ['16:9', '16:10']}\n",
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    assert caught.value.lines() == [
        "m.yaml:6:17: $.jobs[0].image_size: '16:10' is not a valid image_size in jobs[0] "
        "(size=16:10); did you mean '3:2' or '16:9'? "
        "(allowed: 1:1, 9:16, 16:9, 3:4, 4:3, 3:2, 2:3, 5:4, 4:5, 21:9, auto)"
    ]


def test_unquoted_ratio_stays_a_string(hermetic: Path) -> None:
    # YAML 1.1 would read 16:9 as the base-60 integer 969.
    path = write(
        hermetic,
        "version: 1\njobs:\n  - id: a\n    prompt: p\n    images: ['https://x.example/i.png']\n"
        "    image_size: 16:9\n",
    )
    assert load_manifest(path).jobs[0].image_size == "16:9"


def test_repeated_expansion_problems_are_summarised(hermetic: Path) -> None:
    rows = "".join(f"      - {{n: '{i}'}}\n" for i in range(10))
    path = write(
        hermetic,
        "version: 1\njobs:\n  - id: 'j-{n}'\n    prompt: p\n    images: ['ftp://x.example/{n}.png']\n"
        "    rows:\n" + rows,
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    lines = caught.value.lines()
    assert len(lines) == 4
    assert lines[-1] == (
        "m.yaml:5:14: $.jobs[0].images[0]: ... and 7 more expansions with the same problem (bad URL)"
    )


def test_matrix_variable_clashing_with_vars(hermetic: Path) -> None:
    path = write(
        hermetic,
        "version: 1\nvars: {c: x}\njobs:\n  - id: 'a-{c}'\n    prompt: p\n"
        "    images: ['https://x.example/i.png']\n    matrix:\n      c: [1, 2]\n",
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    assert caught.value.lines() == [
        "m.yaml:8:7: $.jobs[0].matrix.c: variable 'c' is also defined in vars; rename one of them"
    ]


def test_prompt_and_images_may_come_from_defaults(hermetic: Path) -> None:
    path = write(
        hermetic,
        "version: 1\ndefaults:\n  prompt: Remove the background\n"
        "  images: ['https://x.example/{sku}.png']\njobs:\n  - id: '{sku}'\n"
        "    matrix: {sku: [mug, cap]}\n  - id: lonely\n",
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    assert caught.value.lines() == [
        "m.yaml:4:12: $.defaults.images[0]: unknown variable {sku}",
    ]
    fixed = path.read_text().replace("  - id: lonely\n", "")
    path.write_text(fixed)
    assert [job.images[0] for job in load_manifest(path).jobs] == [
        "https://x.example/mug.png",
        "https://x.example/cap.png",
    ]


def test_missing_prompt_without_defaults(hermetic: Path) -> None:
    path = write(
        hermetic, "version: 1\njobs:\n  - id: a\n    images: ['https://x.example/i.png']\n"
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    assert caught.value.lines() == [
        "m.yaml:3:5: $.jobs[0]: missing required key 'prompt' (set it on the job or under defaults)"
    ]


def test_file_names_differing_only_in_case_collide(hermetic: Path) -> None:
    path = write(
        hermetic,
        "version: 1\njobs:\n  - {id: Mug, prompt: a, images: ['https://x.example/i.png']}\n"
        "  - {id: mug, prompt: b, images: ['https://x.example/i.png']}\n",
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    assert caught.value.lines() == [
        "m.yaml:4:10: $.jobs[1].id: job 'mug' gets the same default file name 'mug-1.png' as "
        "job 'Mug' (jobs[0], line 3); ids that differ only in upper/lower case collide on some "
        "file systems"
    ]


VARIANTS_WITHOUT_FILENAME = (
    "version: 1\n{output}jobs:\n"
    "  - {{id: x, prompt: a, images: ['https://x.example/i.png'], variants: 2}}\n"
    "  - {{id: y, prompt: b, images: ['https://x.example/i.png']}}\n"
)


def test_default_file_names_tell_variants_apart(hermetic: Path) -> None:
    manifest = load_manifest(write(hermetic, VARIANTS_WITHOUT_FILENAME.format(output="")))
    assert manifest.output.filename is None
    names = [(job.id, job.variant, manifest.output_name(job, 1)) for job in manifest.jobs]
    assert names == [("x", 1, "x-v1-1.png"), ("x", 2, "x-v2-1.png"), ("y", 1, "y-1.png")]
    second = manifest.jobs[1]
    assert manifest.output_name(second, 2) == "x-v2-2.png"


def test_explicit_file_name_without_variant_still_collides(hermetic: Path) -> None:
    output = "output: {filename: '{id}-{n}.{ext}'}\n"
    path = write(hermetic, VARIANTS_WITHOUT_FILENAME.format(output=output))
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    assert caught.value.lines() == [
        "m.yaml:2:20: $.output.filename: output.filename gives job 'x' variant 1 and job 'x' "
        "variant 2 the same file name 'x-1.png'; add {variant}, e.g. "
        '"{id}-v{variant}-{n}.{ext}"'
    ]


def test_default_file_names_of_different_jobs_may_still_collide(hermetic: Path) -> None:
    path = write(
        hermetic,
        VARIANTS_WITHOUT_FILENAME.format(output="").replace("id: y", "id: x-v2"),
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    assert caught.value.lines() == [
        "m.yaml:4:10: $.jobs[1].id: job 'x-v2' gets the same default file name 'x-v2-1.png' as "
        "job 'x' variant 2 (jobs[0], line 3); rename one of them, or set output.filename"
    ]


def test_filename_rules(hermetic: Path) -> None:
    path = write(
        hermetic,
        "version: 1\noutput: {filename: '{idd}/{n}.{ext}'}\n"
        "jobs:\n  - {id: a, prompt: p, images: ['https://x.example/i.png']}\n",
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    assert caught.value.lines() == [
        "m.yaml:2:20: $.output.filename: unknown placeholder {idd}; did you mean 'id'? "
        "(allowed: {id}, {variant}, {n}, {ext})",
        "m.yaml:2:20: $.output.filename: output.filename must contain {id}, or every job writes "
        "the same file",
    ]


def test_render_filename_adds_index_when_template_has_no_n() -> None:
    job = Job("a", 2, 2, "p", ("https://x.example/i.png",), "1:1", "jpeg", "k", "o")
    assert render_filename("{id}-{variant}.{ext}", job, 1) == "a-2.jpg"
    assert render_filename("{id}-{variant}.{ext}", job, 3) == "a-2-3.jpg"
    assert render_filename("{id}/{variant}-{n}.{ext}", job, 3) == "a/2-3.jpg"


def test_secret_names_anywhere(hermetic: Path) -> None:
    path = write(
        hermetic,
        "version: 1\nvars: {Authorization: x}\n"
        "jobs:\n  - {id: a, prompt: p, images: ['https://x.example/i.png'], token: y}\n",
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    lines = caught.value.lines()
    assert [line.split(": ")[1] for line in lines] == ["$.vars.Authorization", "$.jobs[0].token"]
    assert all(
        "RUXA_API_KEY" in line and "x" not in line.split("looks like")[1][:3] for line in lines
    )


@given(st.text(max_size=40))
def test_slug_is_always_safe_in_an_id(value: str) -> None:
    slug = slugify(value)
    assert all(ch in "abcdefghijklmnopqrstuvwxyz0123456789-" for ch in slug)
    assert not slug.startswith("-") and not slug.endswith("-")


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
literals = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=10)


@given(
    st.lists(
        st.one_of(names.map(lambda n: ("var", n)), literals.map(lambda t: ("lit", t))), max_size=6
    )
)
def test_template_round_trip(parts: list[tuple[str, str]]) -> None:
    source = "".join("{" + text + "}" if kind == "var" else text for kind, text in parts)
    template = parse_template(source)
    values = {text: f"<{text}>" for kind, text in parts if kind == "var"}
    expected = "".join(f"<{text}>" if kind == "var" else text for kind, text in parts)
    assert template.render(values) == expected
    assert template.names == frozenset(values)


@given(st.text(alphabet="{}ab", max_size=12))
def test_template_parse_never_crashes(source: str) -> None:
    try:
        template = parse_template(source)
    except TemplateError as exc:
        assert "brace" in str(exc) or "placeholder" in str(exc)
    else:
        template.render({name: "v" for name in template.names})


def test_every_ragged_csv_row_is_reported_in_one_run(run, hermetic) -> None:
    (hermetic / "rows.csv").write_text("sku,product\nmug,a mug\ncup,a cup,extra\nbowl\n")
    (hermetic / "m.yaml").write_text(
        'version: 1\njobs:\n  - id: "{sku}"\n    prompt: Place the {product}\n'
        '    images: ["https://cdn.example.com/{sku}.png"]\n    rows: rows.csv\n'
    )
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.err) == (
        2,
        "rows.csv:3:1: $.jobs[0].rows: row has 3 fields; the header has 2\n"
        "rows.csv:4:1: $.jobs[0].rows: row has 1 field; the header has 2\n",
    )


def test_a_csv_is_checked_even_when_its_job_entry_has_other_problems(run, hermetic) -> None:
    (hermetic / "rows.csv").write_text("sku,product\nmug,a mug\ncup,a cup,extra\n")
    (hermetic / "m.yaml").write_text(
        'version: 1\njobs:\n  - id: "{sku}"\n    promt: Place the {product}\n'
        '    images: ["https://cdn.example.com/{sku}.png"]\n    rows: rows.csv\n'
    )
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.err) == (
        2,
        "m.yaml:4:5: $.jobs[0].promt: unknown key 'promt'; did you mean 'prompt'?\n"
        "rows.csv:3:1: $.jobs[0].rows: row has 3 fields; the header has 2\n",
    )
