"""Local pictures: files on disk that jobs send, known by the sha256 of their bytes.

A manifest's ``images:`` entry that is not an http(s) URL names a file. The file counts in its
job's identity by content (moving or renaming it never resubmits; editing it does), and reaches the
API through an uploader (:mod:`ruxa_batch.uploads`) that the manifest's ``upload:`` section
describes. This module holds the plain values both sides share: what a local file is, how its kind
is told from its bytes, and what the ``upload:`` section says. It reads files but sends nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

# The kinds of picture the API takes, told by their first bytes, never by the file's name.
MEDIA_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
DEFAULT_MAX_FILE_MB = 10.0
# How long a presigned URL stays valid unless the manifest says otherwise (S3 allows 7 days).
DEFAULT_URL_LIFETIME = 86_400.0
MAX_URL_LIFETIME = 604_800.0
DEFAULT_UPLOAD_CONCURRENCY = 8
S3_EXTRA_MISSING = (
    "S3 uploads need the s3 extra: pip install 'ruxa-batch[s3]' (from a checkout: "
    "pip install '.[s3]')"
)
_CHUNK = 1 << 20
# A scheme such as ``https:`` or ``s3:`` (a Windows drive letter is one character: not a scheme).
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def is_url(text: str) -> bool:
    """Whether an ``images:`` entry is meant as a URL (it has a scheme) rather than a path."""
    return _SCHEME.match(text) is not None


def sniff(head: bytes) -> str | None:
    """The media type of a picture from its first 12 bytes; None when it is none the API takes."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True, slots=True)  # one per job: no __dict__ each
class LocalFile:
    """A picture on disk that a job sends."""

    shown: str  # as the user knows it: relative to the manifest's folder (posix), else absolute
    sha256: str  # of the bytes: the file's identity
    size: int
    media_type: str  # one of MEDIA_EXTENSIONS
    path: Path = field(compare=False)  # absolute, to read the bytes from

    @property
    def ext(self) -> str:
        """The extension that goes with the bytes (``jpg`` for a JPEG named ``.jpeg``)."""
        return MEDIA_EXTENSIONS[self.media_type]

    @property
    def ref(self) -> str:
        """How the file stands in a job's identity and stored request: by content only."""
        return f"sha256:{self.sha256}"

    def read(self) -> bytes:
        """The file's bytes, checked to be the ones it was known by (it may have changed since)."""
        data = self.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise ChangedOnDisk(f"{self.shown} changed on disk since the manifest was read")
        return data


class ChangedOnDisk(Exception):
    """A local file's bytes are no longer those its job was planned with."""


def plural(count: int, noun: str) -> str:
    """``1 local picture``, ``3 local pictures``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def size_text(size: float) -> str:
    """``512 bytes``, ``48 KB``, ``3.4 MB``, ``1.2 GB`` (decimal units, as disks are sold)."""
    if size < 1000:
        return f"{int(size):,} bytes"
    for unit in ("KB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            return f"{size:,.0f} {unit}" if size >= 10 else f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def hash_file(path: Path) -> tuple[str, int]:
    """The sha256 (hex) and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# -- the upload: section ---------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Spec:
    """Files go to an S3 or S3-compatible bucket under ``<prefix><sha256>.<ext>``; the API gets
    a presigned GET URL. Credentials come from the standard AWS environment and files."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None


# What an upload command's arguments may name.
COMMAND_PLACEHOLDERS = ("path", "sha256", "ext", "name")


@dataclass(frozen=True)
class CommandSpec:
    """Files are uploaded by a command (an argument list, no shell) that prints the file's URL.

    Placeholders: ``{path}``, ``{sha256}``, ``{ext}``, ``{name}``.
    """

    argv: tuple[str, ...]
    timeout: float = 300.0


@dataclass(frozen=True)
class BaseUrlSpec:
    """Files are already published: the manifest's folder is at ``base_url``; nothing is sent."""

    base_url: str  # ends with "/"


@dataclass(frozen=True)
class UploadSpec:
    """The manifest's ``upload:`` section."""

    method: S3Spec | CommandSpec | BaseUrlSpec
    url_lifetime: float | None = None  # seconds a URL stays valid; None: it does not expire
    concurrency: int = DEFAULT_UPLOAD_CONCURRENCY


@dataclass(frozen=True)
class LocalRules:
    """What a manifest allows of local files (``local_images:``)."""

    roots: tuple[Path, ...]  # absolute; the manifest's folder is always first
    max_bytes: int = int(DEFAULT_MAX_FILE_MB * 1_000_000)
