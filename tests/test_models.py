"""Several Ruxa models in one manifest: per-model fields, checks, requests, prices, sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import api_client, jpeg_size, read_png

from ruxa_batch.jobs import identity_key, request_input
from ruxa_batch.manifest import check_manifest, load_manifest
from ruxa_batch.models import MODEL_FIELDS, MODELS, Prices, models_taking
from ruxa_batch.schema import manifest_schema, model_rules, with_model_rules

HOOK = "https://hooks.example.com/ruxa"

MIXED = f"""\
version: 1
name: mix
callback_url: {HOOK}
output:
  filename: '{{id}}.{{ext}}'
run:
  price_per_task:
    google/nano-banana: 0.02
    google/nano-banana-edit: 0.04
    google/nano-banana-pro: 0.12
jobs:
  - id: base
    model: google/nano-banana
    prompt: A white mug on marble
    image_size: '4:3'
  - id: edited
    prompt: Make the mug red
    images: ['https://cdn.example.com/mug.png']
  - id: hero
    model: google/nano-banana-pro
    prompt: The mug as a hero shot
    image_size: '16:9'
    resolution: 4k
    output_format: jpeg
  - id: hero-from-photo
    model: google/nano-banana-pro
    prompt: The same mug, studio light
    images: ['https://cdn.example.com/mug.png']
"""


def write(folder: Path, text: str) -> Path:
    path = folder / "m.yaml"
    path.write_text(text)
    return path


def problems_of(folder: Path, text: str) -> list[str]:
    _, problems = check_manifest(write(folder, text))
    return [f"{p.line} {p.path}: {p.message}" for p in problems]


# -- the manifest: each job its model, each model its fields ----------------------------------


def test_a_mixed_manifest_gives_each_job_its_model_and_fields(hermetic: Path) -> None:
    manifest = load_manifest(write(hermetic, MIXED))
    jobs = {job.id: job for job in manifest.jobs}
    assert {name: job.model for name, job in jobs.items()} == {
        "base": "google/nano-banana",
        "edited": "google/nano-banana-edit",
        "hero": "google/nano-banana-pro",
        "hero-from-photo": "google/nano-banana-pro",
    }
    assert manifest.request_body(jobs["base"]) == {
        "model": "google/nano-banana",
        "input": {"prompt": "A white mug on marble", "output_format": "png", "image_size": "4:3"},
        "callback_url": HOOK,
    }
    assert manifest.request_body(jobs["hero"]) == {
        "model": "google/nano-banana-pro",
        "input": {
            "prompt": "The mug as a hero shot",
            "output_format": "jpeg",
            "aspect_ratio": "16:9",
            "resolution": "4k",
        },
        "callBackUrl": HOOK,  # the spelling of the model's own page
    }
    assert request_input(jobs["hero-from-photo"]) == {
        "prompt": "The same mug, studio light",
        "image_input": ["https://cdn.example.com/mug.png"],
        "output_format": "png",
        "aspect_ratio": "1:1",
        "resolution": "1k",
    }


def test_model_comes_from_the_job_then_defaults_then_the_top(hermetic: Path) -> None:
    text = (
        "version: 1\nmodel: google/nano-banana\ncallback_url: https://h.example.com/x\n"
        "defaults:\n  model: google/nano-banana-pro\njobs:\n"
        "  - {id: a, prompt: p}\n"
        "  - {id: b, prompt: q, model: google/nano-banana}\n"
    )
    jobs = load_manifest(write(hermetic, text)).jobs
    assert [job.model for job in jobs] == ["google/nano-banana-pro", "google/nano-banana"]
    top = "version: 1\nmodel: google/nano-banana\njobs:\n  - {id: a, prompt: p}\n"
    assert [job.model for job in load_manifest(write(hermetic, top)).jobs] == ["google/nano-banana"]


def test_identity_includes_the_model(hermetic: Path) -> None:
    """The same prompt on another model is another job; an edit job keeps its old identity."""
    one = load_manifest(write(hermetic, MIXED)).jobs[1]
    assert one.key == identity_key(
        "google/nano-banana-edit",
        {
            "prompt": "Make the mug red",
            "image_urls": ["https://cdn.example.com/mug.png"],
            "output_format": "png",
            "image_size": "1:1",
        },
        1,
    )
    keys = set()
    for model in ("google/nano-banana", "google/nano-banana-pro"):
        text = (
            f"version: 1\ncallback_url: {HOOK}\nmodel: {model}\njobs:\n  - {{id: a, prompt: p}}\n"
        )
        keys.add(load_manifest(write(hermetic, text)).jobs[0].key)
    assert len(keys) == 2


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (model, field, value)
        for model, spec in MODELS.items()
        for field, value in (
            ("images", "['https://cdn.example.com/a.png']"),
            ("resolution", "2k"),
        )
        if not spec.takes(field)
    ],
)
def test_every_field_a_model_does_not_take_is_an_error_at_its_line(
    hermetic: Path, model: str, field: str, value: str
) -> None:
    """On the job itself, under the top-level model, and from defaults: each named, at a line."""
    takers = ", ".join(models_taking(field))
    base = f"version: 1\ncallback_url: {HOOK}\n"
    pictures = (
        "    images: ['https://cdn.example.com/b.png']\n" if MODELS[model].images_required else ""
    )
    # 1. on the job, with the job's own model (as an editor shows it too: the schema's rule)
    own = problems_of(
        hermetic,
        base + f"jobs:\n  - id: a\n    model: {model}\n    prompt: p\n{pictures}"
        f"    {field}: {value}\n",
    )
    line = 8 if pictures else 7
    assert own == [
        f"{line} $.jobs[0].{field}: {field} is not taken by {model} ({MODELS[model].kind}); "
        f"the models that take it: {takers}"
    ]
    # 2. on a job that runs on the top-level model
    top = problems_of(
        hermetic,
        base + f"model: {model}\njobs:\n  - id: a\n    prompt: p\n{pictures}    {field}: {value}\n",
    )
    assert len(top) == 1, top
    assert top[0].startswith(f"{line} $.jobs[0].{field}: {field} is not taken by")
    # 3. from defaults, for a job of that model: said at the job's model, naming the line
    from_defaults = problems_of(
        hermetic,
        base + f"defaults:\n  {field}: {value}\n"
        f"jobs:\n  - id: a\n    model: {model}\n    prompt: p\n{pictures}",
    )
    assert from_defaults == [
        f"7 $.jobs[0].model: jobs[0] runs on {model} ({MODELS[model].kind}), which takes "
        f"no {field}, but defaults sets {field} (line 4); set {field} on the jobs whose models "
        f"take it ({takers}) instead (said once: it holds for every job on this model that "
        "does not override it)"
    ]


def test_defaults_reach_every_job_of_a_model_that_takes_them(hermetic: Path) -> None:
    text = (
        f"version: 1\ncallback_url: {HOOK}\ndefaults:\n  resolution: 2k\n  images: "
        "['https://cdn.example.com/a.png']\njobs:\n"
        "  - {id: a, prompt: p, model: google/nano-banana-pro}\n"
        "  - {id: b, prompt: q, model: google/nano-banana-pro, image_size: '3:2'}\n"
    )
    jobs = load_manifest(write(hermetic, text)).jobs
    assert [(job.resolution, len(job.images)) for job in jobs] == [("2k", 1), ("2k", 1)]


def test_the_edit_model_needs_pictures_and_says_which_models_do_not(hermetic: Path) -> None:
    found = problems_of(hermetic, "version: 1\njobs:\n  - {id: a, prompt: p}\n")
    assert found == [
        "3 $.jobs[0]: missing required key 'images': the job runs on google/nano-banana-edit, "
        "which edits 1 to 10 pictures; set images on the job or under defaults, or choose a "
        "model that needs none: google/nano-banana, google/nano-banana-pro"
    ]


def test_a_bad_resolution_is_named_with_the_allowed_ones(hermetic: Path) -> None:
    found = problems_of(
        hermetic,
        f"version: 1\ncallback_url: {HOOK}\njobs:\n"
        "  - {id: a, prompt: p, model: google/nano-banana-pro, resolution: 4K}\n",
    )
    assert len(found) == 1 and "'4K' is not a valid resolution" in found[0]
    assert "did you mean '4k'" in found[0] and found[0].startswith("4 $.jobs[0].resolution")


def test_a_model_that_requires_a_callback_says_what_to_do(hermetic: Path) -> None:
    found = problems_of(
        hermetic,
        "version: 1\njobs:\n"
        "  - {id: a, prompt: p, model: google/nano-banana-pro}\n"
        "  - {id: b, prompt: q, model: google/nano-banana-pro}\n",
    )
    assert found[0] == (
        "3 $.jobs[0].model: google/nano-banana-pro requires a callback URL and the manifest "
        "sets none: add callback_url at the top of the manifest (an https:// endpoint of yours "
        "that accepts POST requests); ruxa-batch still polls every task, so the run does not "
        "depend on the callbacks arriving"
    )
    assert len(found) == 1  # said once, at the first job that needs it


def test_an_unknown_model_lists_the_models(hermetic: Path) -> None:
    found = problems_of(
        hermetic, "version: 1\njobs:\n  - {id: a, prompt: p, model: google/nano-banana-ultra}\n"
    )
    assert len(found) == 1 and all(name in found[0] for name in MODELS)


def test_the_schema_file_holds_the_rules_the_models_make() -> None:
    """The editor's schema is made from models.py: run `python -m ruxa_batch.schema` after
    adding a model."""
    schema = manifest_schema()
    assert with_model_rules(schema) == schema
    assert schema["$defs"]["model"]["enum"] == list(MODELS)
    assert model_rules()["jobModelRules"]["allOf"]  # at least one model refuses a field
    assert set(MODEL_FIELDS) >= {"images", "resolution"}


# -- prices ------------------------------------------------------------------------------------


def test_the_estimate_uses_each_models_price(hermetic: Path, run: Any) -> None:
    write(hermetic, MIXED)
    result = run(["ruxa-batch", "plan", "m.yaml", "--format", "json"])
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    # One task each, at their own prices: 0.02 + 0.04 + 2 * 0.12; three attempts at most.
    assert plan["cost_expected"] == pytest.approx(0.30)
    assert plan["cost_at_most"] == pytest.approx(0.90)
    assert plan["price_per_task"]["google/nano-banana-pro"] == 0.12
    assert [job["model"] for job in plan["jobs"]][:2] == [
        "google/nano-banana",
        "google/nano-banana-edit",
    ]
    text = run(["ruxa-batch", "plan", "m.yaml"]).out
    assert "Cost at google/nano-banana 0.02, google/nano-banana-edit 0.04" in text
    flat = run(["ruxa-batch", "plan", "m.yaml", "--price-per-task", "1", "--format", "json"])
    assert json.loads(flat.out)["cost_expected"] == pytest.approx(4.0)


def test_a_model_without_a_price_makes_the_cost_unknown_not_wrong(hermetic: Path, run: Any) -> None:
    write(hermetic, MIXED.replace("    google/nano-banana: 0.02\n", ""))
    result = run(["ruxa-batch", "plan", "m.yaml"])
    assert "Cost unknown: price_per_task gives no price for google/nano-banana" in result.out
    assert Prices.of({"a": 1}).of_model("b") is None and Prices.of(2).of_model("b") == 2


# -- end to end on the sandbox -----------------------------------------------------------------


def test_each_model_end_to_end_on_the_sandbox(hermetic: Path, run: Any) -> None:
    write(hermetic, MIXED)
    result = run(
        ["ruxa-batch", "run", "m.yaml", "--sandbox", "--no-progress", "--poll-interval", "0.05"]
    )
    assert result.code == 0, result.err
    folder = hermetic / "out" / "mix.sandbox"
    document = json.loads((folder / "results.json").read_text())
    rows = {row["id"]: row for row in document["jobs"]}
    assert {row["status"] for row in rows.values()} == {"succeeded"}
    assert rows["hero"]["model"] == "google/nano-banana-pro" and rows["hero"]["resolution"] == "4k"
    assert rows["base"]["resolution"] is None
    # The sandbox draws 1k pictures 64 pixels on their long side: 4k is four times that.
    assert read_png((folder / "base.png").read_bytes())[:2] == (64, 48)
    assert jpeg_size((folder / "hero.jpg").read_bytes()) == (256, 144)
    assert read_png((folder / "hero-from-photo.png").read_bytes())[:2] == (64, 64)
    csv_header = (folder / "results.csv").read_text().splitlines()[0].split(",")
    assert csv_header[-2:] == ["model", "resolution"]  # appended: no column moved
    report = (folder / "report.html").read_text()
    assert "<b>model</b>google/nano-banana-pro" in report and "<b>resolution</b>4k" in report


def test_the_sandbox_checks_each_models_fields(sandbox: Any) -> None:
    with api_client(sandbox) as client:

        def create(body: dict[str, Any]) -> httpx.Response:
            return client.post("/api/v1/tasks/create", json=body)

        text_only = create(
            {"model": "google/nano-banana", "input": {"prompt": "p", "image_urls": ["https://x/a"]}}
        )
        assert text_only.json()["code"] == 422
        assert "input.image_urls: unknown field" in text_only.json()["message"]
        pro = {
            "model": "google/nano-banana-pro",
            "input": {"prompt": "p", "resolution": "4K", "image_size": "1:1"},
        }
        refused = create(pro).json()
        assert refused["code"] == 422
        for part in (
            "input.resolution: must be one of 1k, 2k, 4k",
            "input.image_size: unknown",
            "callBackUrl: required for google/nano-banana-pro",
        ):
            assert part in refused["message"]
        for spelling in ("callBackUrl", "callback_url"):
            good = {
                "model": "google/nano-banana-pro",
                "input": {"prompt": "p", "resolution": "2k", "aspect_ratio": "16:9"},
                spelling: "https://hooks.example.com/x",
            }
            assert create(good).json()["code"] == 200
        edit_without = create({"model": "google/nano-banana-edit", "input": {"prompt": "p"}}).json()
        assert "input.image_urls: required" in edit_without["message"]


def test_a_misspelled_model_is_one_problem_and_the_rest_is_still_checked(hermetic: Path) -> None:
    found = problems_of(
        hermetic,
        "version: 1\nmodel: google/nano-banana-prp\njobs:\n"
        "  - {id: a, prompt: p}\n  - {id: b, prompt: q, images: ['file:///x.png']}\n",
    )
    assert len(found) == 2, found
    assert found[0].startswith("2 $.model: 'google/nano-banana-prp' is not a valid model")
    assert "did you mean 'google/nano-banana-pro'" in found[0]
    assert found[1].startswith("5 $.jobs[1].images[0]: 'file:///x.png' is not an http(s) URL")


def test_a_bad_callback_url_is_said_once_as_bad_not_as_missing(hermetic: Path) -> None:
    found = problems_of(
        hermetic,
        "version: 1\ncallback_url: ftp://x.example/hook\njobs:\n"
        "  - {id: a, prompt: p, model: google/nano-banana-pro}\n",
    )
    assert len(found) == 1 and found[0].startswith("2 $.callback_url: ")


@pytest.mark.parametrize(
    ("document", "flagged"),
    [
        (
            {"model": "google/nano-banana", "jobs": [{"id": "a", "prompt": "p", "images": ["u"]}]},
            True,
        ),
        (
            {"jobs": [{"id": "a", "prompt": "p", "model": "google/nano-banana", "images": ["u"]}]},
            True,
        ),
        ({"jobs": [{"id": "a", "prompt": "p", "resolution": "2k"}]}, True),
        (
            {
                "defaults": {"model": "google/nano-banana-pro"},
                "jobs": [{"id": "a", "prompt": "p", "resolution": "2k"}],
            },
            False,
        ),
        (
            {
                "model": "google/nano-banana",
                "jobs": [
                    {"id": "a", "prompt": "p", "model": "google/nano-banana-edit", "images": ["u"]}
                ],
            },
            False,
        ),
    ],
)
def test_an_editor_flags_what_the_schema_file_says_a_model_does_not_take(
    document: dict[str, Any], flagged: bool
) -> None:
    """The schema file as an editor reads it (plain jsonschema, its conditional subschemas)."""
    from jsonschema import Draft202012Validator

    errors = list(Draft202012Validator(manifest_schema()).iter_errors({"version": 1, **document}))
    refusals = [e for e in errors if isinstance(e.schema, dict) and "x-not-taken-by" in e.schema]
    assert bool(refusals) == flagged, errors


def test_the_apis_own_field_names_point_to_the_manifests(hermetic: Path) -> None:
    found = problems_of(
        hermetic,
        f"version: 1\ncallback_url: {HOOK}\njobs:\n"
        "  - id: a\n    model: google/nano-banana-pro\n    prompt: p\n    aspect_ratio: '16:9'\n",
    )
    assert found == [
        "7 $.jobs[0].aspect_ratio: unknown key 'aspect_ratio'; write 'image_size': the manifest "
        "has one name for it, which each model's rules send under the name its API uses"
    ]
