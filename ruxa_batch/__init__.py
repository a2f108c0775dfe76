"""ruxa-batch: resumable batches of AI image edits and generations on the Ruxa API, driven by a
YAML manifest."""

from __future__ import annotations

__version__ = "0.2.0"
