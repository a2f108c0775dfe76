"""Getting local pictures to URLs the API can fetch: the uploaders and what they promise.

An uploader publishes one file and returns its URL; the engine asks for each distinct file once,
before the first create that needs it, and records the URL in the state (keyed by the uploader's
``target`` and the file's sha256) so later runs reuse it until it would expire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ruxa_batch.local_files import LocalFile


@dataclass(frozen=True)
class Published:
    """Where a file can be fetched, and until when."""

    url: str
    expires_at: float | None  # wall-clock seconds since the epoch; None: it does not expire
    sent_bytes: int  # bytes sent this time: 0 when the destination already had the file


class UploadFailed(Exception):
    """Publishing one file failed: a one-line reason, naming neither a credential nor a secret.

    It costs only the jobs that need that file (they stay pending); never the batch.
    """


class Uploader(Protocol):
    """Publishes local files somewhere the API can fetch them."""

    @property
    def target(self) -> str:
        """Where files go (``s3://bucket/prefix``...): a URL recorded for one target is never
        reused for another."""
        ...

    async def publish(self, file: LocalFile, *, now: float) -> Published:
        """Make ``file`` fetchable and return its URL; ``now`` is the wall clock, for expiry.

        Raises :class:`UploadFailed` for this file only.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and processes."""
        ...
