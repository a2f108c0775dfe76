"""Reading a create's input pictures, as the real service must before it can edit them.

Only URLs on this machine (``localhost``, 127.0.0.0/8, ``::1``) are read: the sandbox never sends
traffic elsewhere, so any other URL is taken on trust, unread. A URL of the sandbox's own
``/uploads/`` route is read from its store, without HTTP. Reading uses ``http.client`` directly
(no proxy can be involved), with a timeout, a size cap, and redirects followed only while they
stay on this machine.
"""

from __future__ import annotations

import hashlib
import http.client
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from ruxa_batch.addresses import is_loopback
from ruxa_batch.local_files import MEDIA_EXTENSIONS, sniff
from ruxa_batch.sandbox.blobs import MAX_BLOB_BYTES

# The ``input`` fields that hold input picture URLs, in any model the sandbox knows.
INPUT_FIELDS = ("image_urls", "image_input")
READ_TIMEOUT = 10.0  # seconds for the whole read of one input
MAX_INPUT_BYTES = MAX_BLOB_BYTES
MAX_REDIRECTS = 3
# failCode of a task whose input could not be read: the request is at fault, as with a refusal.
INPUT_FAIL_CODE = "400"


class Unreadable(Exception):
    """An input picture could not be read; the message says why, in a few words."""


@dataclass(frozen=True)
class Fetched:
    """An input picture that was read."""

    data: bytes
    sha256: str
    ext: str  # png, jpg or webp, from the bytes


@dataclass(frozen=True)
class InputCheck:
    """What reading a create's inputs found."""

    fail: tuple[str, str] | None = None  # (failCode, failMsg) when one could not be read
    first: Fetched | None = None  # the first input, when it was read (it was on this machine)
    read: int = 0  # inputs read


def input_urls(request_input: object) -> list[str]:
    """Every input picture URL of a create's ``input``, in order over :data:`INPUT_FIELDS`."""
    if not isinstance(request_input, dict):
        return []
    urls: list[str] = []
    for name in INPUT_FIELDS:
        value: Any = request_input.get(name)
        if isinstance(value, list):
            urls += [url for url in value if isinstance(url, str)]
        elif isinstance(value, str):
            urls.append(value)
    return urls


def on_this_machine(url: str) -> bool:
    """True when ``url`` is an http(s) URL whose host is loopback (no DNS lookup)."""
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and is_loopback(parts.hostname)
    except ValueError:
        return False


def shown(url: str) -> str:
    """``url`` without its query and fragment: a presigned URL's signature stays out of messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def check_inputs(urls: Sequence[str], *, own: Callable[[str], bytes | None] | None) -> InputCheck:
    """Read every input on this machine, in order; the first that cannot be read fails the task.

    ``own(url)`` answers for URLs the sandbox serves itself (``None``: not one of its own URLs,
    read it over HTTP; a missing upload raises :class:`Unreadable`). The sandbox's own URLs are
    recognised even when it listens on an address that is not loopback.
    """
    first: Fetched | None = None
    count = 0
    for number, url in enumerate(urls, start=1):
        try:
            data = own(url) if own is not None else None
            if data is None:
                if not on_this_machine(url):
                    continue  # never fetched: nothing leaves this machine
                data = read(url, own=own)
        except Unreadable as exc:
            message = f"input image {number} ({shown(url)}) could not be read: {exc}"
            return InputCheck(fail=(INPUT_FAIL_CODE, message), read=count)
        count += 1
        media = sniff(data[:12])
        if media is None:
            message = (
                f"input image {number} ({shown(url)}) could not be read: "
                "not a PNG, JPEG or WebP image"
            )
            return InputCheck(fail=(INPUT_FAIL_CODE, message), read=count)
        if number == 1:
            sha = hashlib.sha256(data).hexdigest()
            first = Fetched(data, sha, MEDIA_EXTENSIONS[media])
    return InputCheck(first=first, read=count)


def read(url: str, *, own: Callable[[str], bytes | None] | None = None) -> bytes:
    """The bytes at a loopback ``url``; :class:`Unreadable` with the reason otherwise."""
    deadline = time.monotonic() + READ_TIMEOUT
    for _ in range(MAX_REDIRECTS + 1):
        if not on_this_machine(url):
            raise Unreadable("redirected off this machine")
        if own is not None:
            data = own(url)
            if data is not None:
                return data
        location = _get(url, deadline)
        if isinstance(location, bytes):
            return location
        url = urljoin(url, location)
    raise Unreadable("too many redirects")


def _get(url: str, deadline: float) -> bytes | str:
    """One GET: the body of a 200, or the ``Location`` of a redirect."""
    parts = urlsplit(url)
    host = "127.0.0.1" if (parts.hostname or "").lower() == "localhost" else parts.hostname or ""
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        connection = connection_class(host, parts.port, timeout=_left(deadline))
    except (ValueError, TimeoutError) as exc:  # a port out of range; no time left
        raise Unreadable(str(exc) or "timed out") from None
    try:
        connection.request("GET", target, headers={"Host": parts.netloc, "Accept": "image/*"})
        response = connection.getresponse()
        if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            return str(response.getheader("Location"))
        if response.status != 200:
            raise Unreadable(f"HTTP {response.status}")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_INPUT_BYTES:
            raise Unreadable(f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB")
        body = bytearray()
        while chunk := response.read(1 << 16):
            body += chunk
            if len(body) > MAX_INPUT_BYTES:
                raise Unreadable(f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB")
            if connection.sock is not None:
                connection.sock.settimeout(_left(deadline))
        return bytes(body)
    except TimeoutError:
        raise Unreadable("timed out") from None
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise Unreadable(reason[:1].lower() + reason[1:]) from None
    finally:
        connection.close()


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left
