"""Model-specific request rules: the one place that knows how a job becomes a model's ``input``.

Adding a model (for example ``google/nano-banana-pro``, whose input names differ) means adding a
:class:`ModelSpec` here and its enum values to the manifest schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL = "google/nano-banana-edit"


@dataclass(frozen=True)
class ModelSpec:
    """What one model accepts and how a job's fields map onto its request ``input``."""

    name: str
    image_sizes: tuple[str, ...]
    output_formats: tuple[str, ...]
    default_image_size: str
    default_output_format: str
    max_images: int

    def build_input(
        self, *, prompt: str, images: tuple[str, ...], image_size: str, output_format: str
    ) -> dict[str, Any]:
        """The ``input`` object of a create request, exactly as it is sent."""
        return {
            "prompt": prompt,
            "image_urls": list(images),
            "output_format": output_format,
            "image_size": image_size,
        }


NANO_BANANA_EDIT = ModelSpec(
    name=DEFAULT_MODEL,
    image_sizes=("1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9", "auto"),
    output_formats=("png", "jpeg"),
    default_image_size="1:1",
    default_output_format="png",
    max_images=10,
)

MODELS: Mapping[str, ModelSpec] = {NANO_BANANA_EDIT.name: NANO_BANANA_EDIT}

# File extension per output format, for the {ext} placeholder of output.filename.
EXTENSIONS: Mapping[str, str] = {"png": "png", "jpeg": "jpg"}


def get_model(name: str) -> ModelSpec:
    """The spec for ``name``; the schema has already rejected unknown names."""
    return MODELS[name]
