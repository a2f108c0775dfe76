"""The schema file itself: valid, packaged, the single source of truth, in step with the model."""

from __future__ import annotations

import json
from importlib import resources

from helpers import REPO
from jsonschema import Draft202012Validator

from ruxa_batch.models import MODELS, NANO_BANANA_EDIT
from ruxa_batch.schema import manifest_schema


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(manifest_schema())
    assert manifest_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_ships_inside_the_package() -> None:
    # Installed from a wheel there is no checkout around: the file must be package data.
    packaged = resources.files("ruxa_batch").joinpath("schemas/manifest.schema.json")
    assert packaged.is_file()
    assert json.loads(packaged.read_text("utf-8")) == manifest_schema()


def test_top_level_schema_for_editors_is_the_same_file() -> None:
    top = REPO / "schemas" / "manifest.schema.json"
    assert json.loads(top.read_text("utf-8")) == manifest_schema()


def test_example_points_editors_at_the_schema() -> None:
    first = (REPO / "manifests" / "example.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/manifest.schema.json"


def test_enums_match_the_model_rules() -> None:
    defs = manifest_schema()["$defs"]
    assert tuple(defs["imageSize"]["anyOf"][0]["enum"]) == NANO_BANANA_EDIT.image_sizes
    assert tuple(defs["outputFormat"]["anyOf"][0]["enum"]) == NANO_BANANA_EDIT.output_formats
    assert defs["model"]["enum"] == list(MODELS)
    assert defs["images"]["maxItems"] == NANO_BANANA_EDIT.max_images


def test_defaults_accept_every_job_field_but_id_matrix_rows_files() -> None:
    schema = manifest_schema()
    job_fields = set(schema["$defs"]["job"]["properties"])
    assert set(schema["properties"]["defaults"]["properties"]) == job_fields - {
        "id",
        "matrix",
        "rows",
        "files",
    }
