"""Pictures the sandbox keeps by content: uploads, and the inputs it fetched for its tasks.

A blob is named ``<sha256>.<ext>`` (64 lowercase hex digits; ``png``, ``jpg`` or ``webp``) and
its bytes always hash to that name. With a folder, each blob is a file there, written to a
temporary name and renamed, so a crash never leaves half a picture under a real name; without
one, blobs live in memory and go with the process.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from pathlib import Path

from ruxa_batch.local_files import MEDIA_EXTENSIONS

EXTENSIONS = tuple(MEDIA_EXTENSIONS.values())
MAX_BLOB_BYTES = 20 * 1024 * 1024  # an upload, or an input read, may be at most this large
MEDIA_TYPES = {ext: media for media, ext in MEDIA_EXTENSIONS.items()}
_NAME = re.compile(r"([0-9a-f]{64})\.(" + "|".join(EXTENSIONS) + r")")


def parse_name(name: str) -> tuple[str, str] | None:
    """``(sha256, ext)`` of a well-formed blob name, else ``None`` (so no path can escape)."""
    match = _NAME.fullmatch(name)
    return (match.group(1), match.group(2)) if match else None


class BlobStore:
    """Named, content-addressed blobs in ``folder`` (created on first write), or in memory."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._memory: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> bytes | None:
        """The blob's bytes, or ``None`` when there is none of that name."""
        if parse_name(name) is None:
            return None
        if self.folder is None:
            with self._lock:
                return self._memory.get(name)
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None

    def size(self, name: str) -> int | None:
        """The blob's size in bytes, or ``None`` when there is none of that name."""
        if parse_name(name) is None:
            return None
        if self.folder is None:
            with self._lock:
                data = self._memory.get(name)
            return None if data is None else len(data)
        try:
            return (self.folder / name).stat().st_size
        except FileNotFoundError:
            return None

    def find(self, sha256: str) -> bytes | None:
        """The bytes of a blob with this sha256, whatever its extension."""
        for ext in EXTENSIONS:
            data = self.get(f"{sha256}.{ext}")
            if data is not None:
                return data
        return None

    def put(self, name: str, data: bytes) -> bool:
        """Keep ``data`` under ``name`` (the caller has checked that it hashes to it).

        True when it is new, False when the blob was there already. Raises ``OSError``.
        """
        if parse_name(name) is None:
            raise ValueError(f"not a blob name: {name!r}")
        if self.folder is None:
            with self._lock:
                new = name not in self._memory
                self._memory[name] = data
            return new
        target = self.folder / name
        if target.exists():
            return False  # the same name means the same bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return True
