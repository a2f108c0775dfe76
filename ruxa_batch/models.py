"""Model-specific request rules: the one place that knows what each model takes and how a job
becomes that model's ``input``.

A manifest speaks one vocabulary for every model (``images``, ``image_size``, ``resolution``,
``output_format``); each :class:`ModelSpec` says which of those fields its model takes and under
which names they go into its request. The manifest schema's per-model rules, the validator's
messages, the request bodies and the price lookup all read :data:`MODELS`: adding a model is one
more entry here (and, since the sandbox is a separate implementation of the API that catches a
client drifting from the documentation, one in ``sandbox/rules.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL = "google/nano-banana-edit"

# The aspect ratios the Nano Banana models document.
RATIOS = ("1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9", "auto")

# The manifest's fields that mean the same for every model that takes them; a model takes a
# subset. ``prompt`` is taken by all.
MODEL_FIELDS = ("images", "image_size", "resolution", "output_format")


@dataclass(frozen=True)
class ModelSpec:
    """What one model accepts and how a job's fields map onto its request ``input``."""

    name: str
    kind: str  # what it does, in a few words: "edits pictures"
    image_field: str | None  # where the input pictures go (None: it takes none)
    images_required: bool
    max_images: int
    ratio_field: str  # where the manifest's image_size goes
    image_sizes: tuple[str, ...]
    default_image_size: str
    output_formats: tuple[str, ...]
    default_output_format: str
    resolutions: tuple[str, ...] = ()  # empty: it takes no resolution
    default_resolution: str | None = None
    callback_field: str = "callback_url"  # how its request spells the callback URL
    callback_required: bool = False

    def takes(self, field: str) -> bool:
        """Whether the model takes the manifest field ``field`` (one of MODEL_FIELDS)."""
        if field == "images":
            return self.image_field is not None
        if field == "resolution":
            return bool(self.resolutions)
        return field in ("prompt", "image_size", "output_format")

    def build_input(
        self,
        *,
        prompt: str,
        images: tuple[str, ...],
        image_size: str,
        output_format: str,
        resolution: str | None = None,
    ) -> dict[str, Any]:
        """The ``input`` object of a create request, exactly as it is sent."""
        built: dict[str, Any] = {"prompt": prompt}
        if self.image_field is not None and (images or self.images_required):
            built[self.image_field] = list(images)
        built["output_format"] = output_format
        built[self.ratio_field] = image_size
        if self.resolutions:
            built["resolution"] = resolution or self.default_resolution
        return built


NANO_BANANA_EDIT = ModelSpec(
    name=DEFAULT_MODEL,
    kind="edits 1 to 10 pictures",
    image_field="image_urls",
    images_required=True,
    max_images=10,
    ratio_field="image_size",
    image_sizes=RATIOS,
    default_image_size="1:1",
    output_formats=("png", "jpeg"),
    default_output_format="png",
)

NANO_BANANA = ModelSpec(
    name="google/nano-banana",
    kind="makes a picture from text",
    image_field=None,
    images_required=False,
    max_images=0,
    ratio_field="image_size",
    image_sizes=RATIOS,
    default_image_size="1:1",
    output_formats=("png", "jpeg"),
    default_output_format="png",
)

NANO_BANANA_PRO = ModelSpec(
    name="google/nano-banana-pro",
    kind="makes a picture from text and up to 10 pictures, at 1k, 2k or 4k",
    image_field="image_input",
    images_required=False,
    max_images=10,
    ratio_field="aspect_ratio",
    image_sizes=RATIOS,
    default_image_size="1:1",
    output_formats=("png", "jpeg"),
    default_output_format="png",
    resolutions=("1k", "2k", "4k"),
    default_resolution="1k",
    callback_field="callBackUrl",
    callback_required=True,
)

MODELS: Mapping[str, ModelSpec] = {
    spec.name: spec for spec in (NANO_BANANA_EDIT, NANO_BANANA, NANO_BANANA_PRO)
}

# File extension per output format, for the {ext} placeholder of output.filename.
EXTENSIONS: Mapping[str, str] = {"png": "png", "jpeg": "jpg"}


def get_model(name: str) -> ModelSpec:
    """The spec for ``name``; the schema has already rejected unknown names."""
    return MODELS[name]


def models_taking(field: str) -> tuple[str, ...]:
    """The models that take the manifest field ``field``, by name."""
    return tuple(name for name, spec in MODELS.items() if spec.takes(field))


@dataclass(frozen=True)
class Prices:
    """What one task costs: one figure for every model (``run.price_per_task: 0.04``), or a
    figure per model (``run.price_per_task: {google/nano-banana-pro: 0.12, ...}``)."""

    every: float | None = None
    per_model: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, value: Any) -> Prices:
        """From the manifest's value or the flag's (a number, or a mapping of model names)."""
        if isinstance(value, Prices):
            return value
        if isinstance(value, Mapping):
            return cls(None, tuple((str(model), float(price)) for model, price in value.items()))
        return cls(float(value))

    def of_model(self, model: str) -> float | None:
        """The price of one task of ``model`` (None: not given)."""
        return dict(self.per_model).get(model, self.every)

    def text(self, models: Sequence[str] = ()) -> str:
        """``0.04``, or each of ``models``'s price (all given when none are named)."""
        if not self.per_model:
            return f"{self.every:g}"
        shown = [(model, price) for model, price in self.per_model if model in models or not models]
        return ", ".join(f"{model} {price:g}" for model, price in shown)

    def __str__(self) -> str:
        return self.text()
