"""What the API accepts: the one place that knows each model's request rules.

Written from ``ruxa-api.md`` independently of the client's own model rules, so the sandbox can
catch a client that drifts from the documentation. Another model is one more :data:`MODELS` entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

IMAGE_SIZES = ("1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9", "auto")
OUTPUT_FORMATS = ("png", "jpeg")
RESOLUTIONS = ("1k", "2k", "4k")  # nano-banana-pro; lowercase, as its page writes them
EXTENSIONS = {"png": "png", "jpeg": "jpg"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
CALLBACK_KEYS = ("callback_url", "callBackUrl")  # both spellings appear in Ruxa's pages


@dataclass(frozen=True)
class Output:
    """What a request asks to get back."""

    output_format: str
    aspect: str  # "W:H", or "auto"
    scale: int = 1  # of the sandbox's picture size: 1, 2 or 4 for a resolution of 1k, 2k, 4k


@dataclass(frozen=True)
class ModelRules:
    """How one model's ``input`` is checked, and the engine name its task ids carry."""

    engine: str
    check_input: Callable[[object, list[str]], Output]
    callback_required: bool = False


@dataclass(frozen=True)
class CreateRequest:
    """A create body that passed every check."""

    request: dict[str, Any]  # as received
    model: ModelRules
    output: Output
    callback_url: str | None

    def fingerprint(self) -> str:
        """A hash of model + input: equal for requests that would do (and cost) the same."""
        same = {key: self.request[key] for key in ("model", "input")}
        return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()


def is_http_url(value: object) -> bool:
    """True for a string ``http://`` or ``https://`` URL with a host."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _enum_problem(path: str, value: object, allowed: tuple[str, ...]) -> str | None:
    if isinstance(value, str) and value in allowed:
        return None
    return f"{path}: must be one of {', '.join(allowed)} (got {json.dumps(value)})"


def _check_fields(value: object, known: set[str], problems: list[str]) -> dict[str, Any] | None:
    """``input`` as an object with a prompt and only ``known`` fields (problems appended)."""
    if not isinstance(value, dict):
        problems.append("input: required, an object")
        return None
    for key in sorted(set(value) - known):
        problems.append(f"input.{key}: unknown field")
    prompt = value.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("input.prompt: required, a non-empty string")
    return value


def _check_urls(value: dict[str, Any], field: str, least: int, problems: list[str]) -> None:
    urls = value.get(field, [] if least == 0 else None)
    if not isinstance(urls, list) or not least <= len(urls) <= 10:
        need = "required, a list of 1 to 10" if least else "a list of at most 10"
        problems.append(f"input.{field}: {need} image URLs")
        return
    problems += [
        f"input.{field}[{i}]: must be an http(s) URL"
        for i, url in enumerate(urls)
        if not is_http_url(url)
    ]


def _output(value: dict[str, Any], ratio_field: str, problems: list[str]) -> Output:
    output_format = value.get("output_format", "png")
    aspect = value.get(ratio_field, "1:1")
    for problem in (
        _enum_problem("input.output_format", output_format, OUTPUT_FORMATS),
        _enum_problem(f"input.{ratio_field}", aspect, IMAGE_SIZES),
    ):
        if problem:
            problems.append(problem)
    return Output(str(output_format), str(aspect))


def check_edit_input(value: object, problems: list[str]) -> Output:
    """Check the ``input`` of ``google/nano-banana-edit``, appending every problem found."""
    known = {"prompt", "image_urls", "output_format", "image_size"}
    checked = _check_fields(value, known, problems)
    if checked is None:
        return Output("png", "1:1")
    _check_urls(checked, "image_urls", 1, problems)
    return _output(checked, "image_size", problems)


def check_text_input(value: object, problems: list[str]) -> Output:
    """Check the ``input`` of ``google/nano-banana`` (text to image: no input pictures)."""
    checked = _check_fields(value, {"prompt", "output_format", "image_size"}, problems)
    if checked is None:
        return Output("png", "1:1")
    return _output(checked, "image_size", problems)


def check_pro_input(value: object, problems: list[str]) -> Output:
    """Check the ``input`` of ``google/nano-banana-pro``: optional input pictures under
    ``image_input``, ``aspect_ratio`` and a lowercase ``resolution``."""
    known = {"prompt", "image_input", "aspect_ratio", "resolution", "output_format"}
    checked = _check_fields(value, known, problems)
    if checked is None:
        return Output("png", "1:1")
    _check_urls(checked, "image_input", 0, problems)
    output = _output(checked, "aspect_ratio", problems)
    resolution = checked.get("resolution", "1k")
    problem = _enum_problem("input.resolution", resolution, RESOLUTIONS)
    if problem:
        problems.append(problem)
        return output
    return Output(output.output_format, output.aspect, scale=int(str(resolution)[0]))


MODELS = {
    "google/nano-banana-edit": ModelRules("gemini-2.5-flash-image", check_edit_input),
    "google/nano-banana": ModelRules("gemini-2.5-flash-image", check_text_input),
    "google/nano-banana-pro": ModelRules(
        "gemini-3-pro-image", check_pro_input, callback_required=True
    ),
}


def check_create(body: bytes) -> CreateRequest | list[str]:
    """The checked create request, or every problem with it, each naming the field."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ["request body: not valid JSON"]
    if not isinstance(request, dict):
        return ["request body: must be a JSON object"]
    problems = [
        f"{key}: unknown field" for key in sorted(set(request) - {"model", "input", *CALLBACK_KEYS})
    ]
    model = request.get("model")
    rules = MODELS.get(model) if isinstance(model, str) else None
    if rules is None:
        problems.append(_enum_problem("model", model, tuple(MODELS)) or "model")
    callback_key = next((key for key in CALLBACK_KEYS if key in request), None)
    callback_url = request[callback_key] if callback_key else None
    if callback_key and not is_http_url(callback_url):
        problems.append(f"{callback_key}: must be an http(s) URL")
    if rules is not None and rules.callback_required and callback_key is None:
        problems.append(f"callBackUrl: required for {model}")
    output = rules.check_input(request.get("input"), problems) if rules else None
    if rules is None or output is None or problems:
        return problems
    return CreateRequest(request, rules, output, callback_url)
