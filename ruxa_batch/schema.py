"""The manifest's JSON Schema: loading it, checking a document against it, and wording the errors.

``ruxa_batch/schemas/manifest.schema.json`` is the single source of truth for the manifest's shape
(``schemas/manifest.schema.json`` at the top of the repository links to it for editors). Every
schema error becomes a :class:`Problem` that points at the offending line, with a "did you mean"
for misspelled keys and enum values.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from ruxa_batch.errors import Problem
from ruxa_batch.suggest import close_matches, did_you_mean, nearest_ratios, show, type_name
from ruxa_batch.template import TemplateError, parse_template
from ruxa_batch.yamlsource import Document, PathKey

SCHEMA_RESOURCE = "schemas/manifest.schema.json"

# Key names that hold secrets; such a key in a manifest is refused wherever it stands.
_SECRET_NAMES = {
    "apikey",
    "apitoken",
    "token",
    "accesstoken",
    "authtoken",
    "authorization",
    "bearer",
    "secret",
    "secretkey",
    "password",
    "ruxaapikey",
}
# AWS (and S3-compatible stores') credential names: the upload: s3 section must never hold them.
_AWS_SECRET_NAMES = {
    "accesskey",
    "accesskeyid",
    "awsaccesskey",
    "awsaccesskeyid",
    "secretaccesskey",
    "awssecretaccesskey",
    "awssecretkey",
    "sessiontoken",
    "awssessiontoken",
}
# What a Ruxa key looks like; the value itself is never echoed.
_KEY_VALUE = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
SECRET_HOME = (
    "the API key belongs in the RUXA_API_KEY environment variable, never in a file that goes "
    "into git"
)
AWS_SECRET_HOME = (
    "AWS credentials belong in the AWS environment variables (AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY) or ~/.aws/credentials, never in a file that goes into git"
)
KEY_VALUE_MESSAGE = (
    "this value looks like a Ruxa API key; keys belong in the RUXA_API_KEY environment "
    "variable, never in a file that goes into git"
)

_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def schema_text() -> str:
    """The schema file's text, from the installed package."""
    return resources.files("ruxa_batch").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")


@cache
def manifest_schema() -> dict[str, Any]:
    """The parsed manifest schema."""
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    # Local $refs are inlined once: resolving them per job costs a third of the time of
    # validating a 10,000-job manifest. The per-model rules are left to the validator's
    # expansion, which knows each job's model wherever it is set and says the same thing:
    # evaluated here, their conditions on every entry doubled the time of a 10,000-entry file.
    schema = manifest_schema()
    plain = {key: value for key, value in schema.items() if key != "allOf"}
    job = {key: value for key, value in schema["$defs"]["job"].items() if key != "allOf"}
    plain["$defs"] = {**schema["$defs"], "job": job}
    return Draft202012Validator(_inline_refs(plain, plain["$defs"]))


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    ref = out.pop("$ref", None)
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {**target, **out}
    if ref is not None:
        out["$ref"] = ref
    return out


def _letters(key: str) -> str:
    return re.sub(r"[^a-z]", "", key.lower())


def is_secret_name(key: str) -> bool:
    """True for key names like ``api_key``, ``token``, ``Authorization`` or
    ``aws_secret_access_key``."""
    return _letters(key) in _SECRET_NAMES or _letters(key) in _AWS_SECRET_NAMES


def secret_home(key: str, path: PathKey = ()) -> str:
    """Where the secret a key named ``key`` (at ``path``) holds belongs instead of a manifest."""
    if _letters(key) in _AWS_SECRET_NAMES or path[:2] == ("upload", "s3"):
        return AWS_SECRET_HOME
    return SECRET_HOME


def looks_like_key(text: str) -> bool:
    """True for text that contains something shaped like a Ruxa key (``sk-...``)."""
    return _KEY_VALUE.search(text) is not None


def secret_problems(doc: Document) -> tuple[list[Problem], set[PathKey]]:
    """Problems for secret-looking keys and values, and the paths already reported (no other
    message may be about them: it could quote the value)."""
    problems: list[Problem] = []
    reported: set[PathKey] = set()

    def walk(value: Any, path: PathKey) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                here = (*path, key)
                if is_secret_name(key):
                    reported.add(here)
                    problems.append(
                        doc.problem(
                            here,
                            f"{key!r} looks like a secret; {secret_home(key, path)}",
                            key=True,
                        )
                    )
                else:
                    walk(item, here)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, (*path, index))
        elif isinstance(value, str) and looks_like_key(value):
            reported.add(path)
            problems.append(doc.problem(path, KEY_VALUE_MESSAGE))

    walk(doc.data, ())
    return problems, reported


def check_document(doc: Document) -> tuple[list[Problem], set[PathKey]]:
    """Every schema problem in ``doc``, in file order, and the paths of the values they concern."""
    problems, reported = secret_problems(doc)
    broken = set(reported)
    for error in _validator().iter_errors(doc.data):
        broken.add(tuple(error.absolute_path))
        problems.extend(_explain(doc, error, reported))
    # A field the job's model does not take is that, whatever else its value is: one message.
    refused = {p.path for p in problems if _NOT_TAKEN in p.message}
    problems = [p for p in problems if p.path not in refused or _NOT_TAKEN in p.message]
    ordered = sorted(set(problems), key=lambda p: (p.line, p.col, p.path, p.message))
    return ordered, broken


def _explain(doc: Document, error: Any, reported: set[PathKey]) -> list[Problem]:
    """Word one jsonschema ``ValidationError`` as located problems."""
    path: PathKey = tuple(error.absolute_path)
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    value = error.validator_value

    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        out = []
        for key in instance:
            if key in schema.get("properties", {}) or (*path, key) in reported:
                continue
            if not allowed:  # a mapping of free-form names: the value type is wrong instead
                continue
            hint = did_you_mean(close_matches(key, allowed))
            if key in _API_NAMES and _API_NAMES[key] in allowed:
                hint = (
                    f"; write {_API_NAMES[key]!r}: the manifest has one name for it, which each "
                    "model's rules send under the name its API uses"
                )
            if not hint:
                hint = f" (allowed here: {', '.join(allowed)})"
            out.append(doc.problem((*path, key), f"unknown key {key!r}{hint}", key=True))
        return out
    if kind == "required":
        missing = [name for name in value if isinstance(instance, dict) and name not in instance]
        return [doc.problem(path, f"missing required key {name!r}") for name in missing]
    if kind == "propertyNames":
        # Messages come from "x-hint", written for the reader, never from "description",
        # which documents the field for editors.
        hint = error.context[0].schema.get("x-hint", "") if error.context else ""
        return [
            doc.problem(
                (*path, str(instance)),
                f"invalid name {show(instance)}: use {hint or 'a valid name'}",
                key=True,
            )
        ]
    if any(step in reported for step in _prefixes(path)):
        return []
    if kind == "not" and "x-not-taken-by" in schema:
        return [doc.problem(path, _not_taken(schema["x-not-taken-by"], _field(path)))]
    if kind == "anyOf" and isinstance(instance, str) and ("{" in instance or "}" in instance):
        try:
            parse_template(instance)
        except TemplateError as exc:
            return [doc.problem(path, str(exc))]
    if kind == "anyOf":
        chosen = _any_of_branch(error)
        if chosen is not None:
            return _explain(doc, chosen, reported)
    return [doc.problem(path, _message(kind, value, instance, schema, error, path))]


_NOT_TAKEN = " is not taken by "
# The API's input names that the manifest spells in its own words (see models.py).
_API_NAMES = {
    "aspect_ratio": "image_size",
    "image_urls": "images",
    "image_input": "images",
    "callBackUrl": "callback_url",
}


def _not_taken(model: str, field: str) -> str:
    from ruxa_batch.models import MODELS, models_taking

    return (
        f"{field}{_NOT_TAKEN}{model} ({MODELS[model].kind}); the models that take it: "
        f"{', '.join(models_taking(field))}"
    )


def _prefixes(path: PathKey) -> list[PathKey]:
    return [path[:cut] for cut in range(1, len(path) + 1)]


def _field(path: PathKey) -> str:
    for part in reversed(path):
        if isinstance(part, str):
            return part
    return "value"


def _message(
    kind: str, value: Any, instance: Any, schema: dict[str, Any], error: Any, path: PathKey
) -> str:
    if kind == "type":
        wanted = [value] if isinstance(value, str) else list(value)
        words = " or ".join(_TYPE_WORDS.get(w, w) for w in wanted)
        return f"expected {words}, got {type_name(instance)}"
    if kind == "const":
        return f"must be {show(value)}, got {show(instance)}"
    if kind == "enum":
        return _enum_message(instance, [str(v) for v in value], _field(path))
    if kind == "anyOf":
        types = sorted({sub.validator_value for sub in error.context if sub.validator == "type"})
        words = " or ".join(_TYPE_WORDS.get(str(w), str(w)) for w in types) or "another value"
        return f"expected {words}, got {type_name(instance)}"
    if kind == "pattern":
        if value == "\\S":
            return "must not be empty or blank"
        hint = schema.get("x-hint", "")
        return f"{show(instance)} is not valid" + (f": use {hint}" if hint else "")
    if kind == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters long"
    if kind == "maxLength":
        return f"is {len(instance)} characters long; at most {value} allowed"
    if kind in ("minItems", "minProperties"):
        return "must not be empty" if value == 1 else f"needs at least {value} entries"
    if kind in ("maxItems", "maxProperties"):
        return f"has {len(instance)} entries; at most {value} allowed"
    if kind == "minimum":
        return f"must be at least {value}, got {show(instance)}"
    if kind == "maximum":
        return f"must be at most {value}, got {show(instance)}"
    if kind == "exclusiveMinimum":
        return f"must be greater than {value}, got {show(instance)}"
    text = str(error.message)
    return text if len(text) <= 160 else text[:157] + "..."


def _enum_message(instance: Any, allowed: list[str], field: str) -> str:
    if not isinstance(instance, str):
        return f"expected one of {', '.join(allowed)}; got {type_name(instance)}"
    near = nearest_ratios(instance, allowed) if field == "image_size" else []
    suggestions = near or close_matches(instance, allowed)
    hint = did_you_mean(suggestions)
    return f"{show(instance)} is not a valid {field}{hint} (allowed: {', '.join(allowed)})"


def _any_of_branch(error: Any) -> Any:
    """The sub-error that best explains an anyOf failure; None if no branch has the right type.

    Branches whose type does not even match are skipped; among the rest the first wins, since by
    convention the first branch is the literal form and later ones are templates.
    """
    by_branch: dict[int, list[Any]] = {}
    for sub in error.context:
        by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
    for branch in sorted(by_branch):
        subs = by_branch[branch]
        if any(sub.validator == "type" and not sub.relative_path for sub in subs):
            continue
        return max(subs, key=lambda sub: len(sub.relative_path))
    return None


# -- the per-model rules, made from the model rules (models.py) --------------------------------


def model_rules() -> dict[str, Any]:
    """The schema's per-model parts, made from :data:`~ruxa_batch.models.MODELS`: the model names,
    and conditional subschemas that refuse a field a job's model does not take.

    A job's model is its own, else ``defaults.model``, else the manifest's (else the default
    model): each rule applies where that is known from one object, so an editor flags the field
    as it is typed. (A field set under ``defaults`` reaches jobs whose models may differ: the
    validator reports it at each job whose model does not take it.)
    """
    from ruxa_batch.models import DEFAULT_MODEL, MODEL_FIELDS, MODELS, models_taking

    def refusals(name: str) -> dict[str, Any]:
        spec = MODELS[name]
        refused = {}
        for field in MODEL_FIELDS:
            if spec.takes(field):
                continue
            text = (
                f"{field} is not taken by {name} ({spec.kind}); the models that take it: "
                f"{', '.join(models_taking(field))}"
            )
            # errorMessage: what editors that honour it show instead of "not allowed"
            refused[field] = {
                "description": text,
                "errorMessage": text,
                "not": {},
                "x-not-taken-by": name,
            }
        return refused

    def names(model: str) -> dict[str, Any]:
        return {"required": ["model"], "properties": {"model": {"const": model}}}

    no_model: dict[str, Any] = {"not": {"required": ["model"]}}
    job_rules = [
        {"if": names(name), "then": {"properties": refusals(name)}}
        for name in MODELS
        if refusals(name)
    ]
    # Jobs that name no model run on defaults' model, else on the manifest's.
    inherit = []
    for name in MODELS:
        if not refusals(name):
            continue
        jobs_of = {
            "properties": {
                "jobs": {
                    "items": {"if": no_model, "then": {"properties": refusals(name)}},
                }
            }
        }
        inherit.append(
            {
                "if": {"required": ["defaults"], "properties": {"defaults": names(name)}},
                "then": jobs_of,
            }
        )
        top = names(name) if name != DEFAULT_MODEL else {"anyOf": [names(name), no_model]}
        inherit.append(
            {
                "if": {"allOf": [top, {"properties": {"defaults": no_model}}]},
                "then": jobs_of,
            }
        )

    def union(values: Any) -> list[str]:
        return list(dict.fromkeys(value for spec in MODELS.values() for value in values(spec)))

    def closed(description: str, values: list[str]) -> dict[str, Any]:
        return {
            "description": description,
            "anyOf": [{"enum": values}, {"$ref": "#/$defs/template"}],
        }

    resolutions = [name for name, spec in MODELS.items() if spec.resolutions]
    return {
        "imageSize": closed("Aspect ratio of the output.", union(lambda spec: spec.image_sizes)),
        "outputFormat": closed("Output image format.", union(lambda spec: spec.output_formats)),
        "resolution": closed(
            f"Output resolution, for the models that take one ({', '.join(resolutions)}).",
            union(lambda spec: spec.resolutions),
        ),
        "images": {
            "description": "Input pictures, for the models that take them (up to "
            f"{max(spec.max_images for spec in MODELS.values())}): http(s) URLs, or paths of "
            "PNG, JPEG or WebP files relative to the manifest's folder.",
            "type": "array",
            "minItems": 1,
            "maxItems": max(spec.max_images for spec in MODELS.values()),
            "items": {"type": "string", "minLength": 1, "maxLength": 4096},
        },
        "model": {
            "description": "The Ruxa model: "
            + "; ".join(f"{name} {spec.kind}" for name, spec in MODELS.items())
            + ".",
            "enum": list(MODELS),
        },
        "jobModelRules": {"allOf": job_rules},
        "manifestModelRules": {"allOf": inherit},
    }


def with_model_rules(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its per-model parts made again from the model rules."""
    return {**schema, "$defs": {**schema["$defs"], **model_rules()}}


if __name__ == "__main__":  # python -m ruxa_batch.schema: rewrite the per-model parts
    import sys
    from pathlib import Path

    target = Path(__file__).parent / SCHEMA_RESOURCE
    updated = with_model_rules(json.loads(target.read_text(encoding="utf-8")))
    target.write_text(json.dumps(updated, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {target}\n")
