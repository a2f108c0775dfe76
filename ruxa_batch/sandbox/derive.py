"""Result pictures that visibly come from the task's input picture.

When a task's first input was read and is a PNG that :mod:`~ruxa_batch.sandbox.pngread` decodes,
its result is that picture scaled to cover the result's size, centre-cropped, tinted by a hash of
the task id (every task's result differs) and framed in a colour taken from the input's sha256.
Any other input that was read (a JPEG, a WebP, a 16-bit PNG) gives today's drawing from the task
id in that same frame, so the result is still tied to its input. A task whose inputs were not
read (they were not on this machine) gets the plain drawing.

Decoded inputs are cached by sha256, a few at a time: a load test runs thousands of tasks on the
same handful of pictures, and decoding in pure Python is the expensive part.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from operator import itemgetter

from ruxa_batch.sandbox import images
from ruxa_batch.sandbox.pngread import Picture, Undecodable, decode_png

CACHE_SIZE = 8  # decoded inputs kept; each is at most pngread.MAX_PIXELS * 3 bytes


def frame_colour(sha256: str) -> bytes:
    """The RGB colour of the frame around results of the input with this sha256."""
    return bytes.fromhex(sha256[:6])


def tint_colour(key: str) -> bytes:
    """The RGB colour a task's result is tinted towards, from a hash of its id."""
    return hashlib.sha256(b"tint:" + key.encode("utf-8")).digest()[:3]


def tinted(value: int, tint: int) -> int:
    """One channel of a tinted pixel: three parts the input, one part the tint."""
    return (3 * value + tint) // 4


def cover(picture: Picture, *, width: int, height: int) -> list[bytearray]:
    """``picture`` scaled (nearest neighbour) to cover ``width`` x ``height``, centre-cropped."""
    scale = max(width / picture.width, height / picture.height)
    left = (picture.width - width / scale) / 2
    top = (picture.height - height / scale) / 2
    columns = [min(picture.width - 1, int(left + (x + 0.5) / scale)) for x in range(width)]
    offsets = [3 * column + c for column in columns for c in range(3)]
    pick = itemgetter(*offsets)
    rows = []
    for y in range(height):
        source = picture.rows[min(picture.height - 1, int(top + (y + 0.5) / scale))]
        picked = pick(source)
        rows.append(bytearray(picked if isinstance(picked, tuple) else (picked,)))
    return rows


def _tint(rows: list[bytearray], key: str) -> None:
    tables = [bytes(tinted(v, t) for v in range(256)) for t in tint_colour(key)]
    for row in rows:
        for c, table in enumerate(tables):
            row[c::3] = row[c::3].translate(table)


def _frame(rows: list[bytearray], colour: bytes, *, width: int, height: int) -> None:
    thickness = max(1, min(width, height) // 12)
    line = colour * width
    side = colour * thickness
    for y, row in enumerate(rows):
        if y < thickness or y >= height - thickness:
            row[:] = line
        else:
            row[: 3 * thickness] = side
            row[3 * (width - thickness) :] = side


def result_rows(
    key: str, *, width: int, height: int, source: tuple[str, Picture | None] | None
) -> list[bytearray]:
    """The RGB rows of task ``key``'s result; ``source`` is its first input's
    ``(sha256, decoded picture or None)`` when that input was read."""
    if source is None:
        return images.draw(key, width=width, height=height)
    sha256, picture = source
    if picture is None:
        rows = images.draw(key, width=width, height=height)
    else:
        rows = cover(picture, width=width, height=height)
        _tint(rows, key)
    _frame(rows, frame_colour(sha256), width=width, height=height)
    return rows


class DecodedInputs:
    """Decoded input pictures by sha256, the most recently used :data:`CACHE_SIZE` of them.

    ``None`` is cached too: an input that does not decode is not tried again.
    """

    def __init__(self, capacity: int = CACHE_SIZE) -> None:
        self._capacity = capacity
        self._pictures: OrderedDict[str, Picture | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str, load: Callable[[], bytes | None]) -> Picture | None:
        """The decoded picture of the input ``sha256``; ``load()`` gives its bytes on a miss."""
        with self._lock:
            if sha256 in self._pictures:
                self._pictures.move_to_end(sha256)
                return self._pictures[sha256]
        # Decoded without the lock: another task's result need not wait for this one's input.
        data = load()
        if data is None:
            return None  # not kept (yet): not cached, so a later upload can still be found
        try:
            picture: Picture | None = decode_png(data)
        except Undecodable:
            picture = None
        with self._lock:
            self._pictures[sha256] = picture
            while len(self._pictures) > self._capacity:
                self._pictures.popitem(last=False)
        return picture
