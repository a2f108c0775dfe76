"""The sandbox's PNG decoder reads what its own encoder writes and every filter and colour type
it claims, and refuses the rest (the caller then falls back)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import pytest

from ruxa_batch.sandbox import images
from ruxa_batch.sandbox.pngread import Undecodable, decode_png


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


# Forward filters, written from the PNG specification apart from the decoder's inverse ones.
FILTERS: dict[int, Callable[[bytes, bytes, int], bytes]] = {
    0: lambda line, prior, bpp: line,
    1: lambda line, prior, bpp: bytes(
        (line[i] - (line[i - bpp] if i >= bpp else 0)) % 256 for i in range(len(line))
    ),
    2: lambda line, prior, bpp: bytes((line[i] - prior[i]) % 256 for i in range(len(line))),
    3: lambda line, prior, bpp: bytes(
        (line[i] - ((line[i - bpp] if i >= bpp else 0) + prior[i]) // 2) % 256
        for i in range(len(line))
    ),
    4: lambda line, prior, bpp: bytes(
        (
            line[i]
            - paeth(line[i - bpp] if i >= bpp else 0, prior[i], prior[i - bpp] if i >= bpp else 0)
        )
        % 256
        for i in range(len(line))
    ),
}


def make_png(
    width: int,
    height: int,
    lines: list[bytes],
    *,
    colour_type: int,
    bpp: int,
    filters: list[int],
    extra: bytes = b"",
    depth: int = 8,
    interlace: int = 0,
) -> bytes:
    """A PNG whose line ``y`` is filtered with ``filters[y % len(filters)]``."""
    raw = b""
    prior = bytes(width * bpp)
    for y, line in enumerate(lines):
        kind = filters[y % len(filters)]
        raw += bytes([kind]) + FILTERS[kind](line, prior, bpp)
        prior = line
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + extra
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def pattern(width: int, height: int, channels: int) -> list[bytes]:
    """Lines with every byte value in use, so each filter's wrap-around is exercised."""
    return [
        bytes(
            (x * 37 + y * 91 + c * 53 + x * y) % 256 for x in range(width) for c in range(channels)
        )
        for y in range(height)
    ]


def test_reads_the_sandbox_encoders_own_pngs() -> None:
    rows = images.draw("task_x", width=37, height=21)
    picture = decode_png(images.encode_png(37, 21, rows, text={"Comment": "task_x"}))
    assert (picture.width, picture.height) == (37, 21)
    assert [bytes(row) for row in rows] == list(picture.rows)


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 3, 2, 1, 0]])
def test_every_filter_type_on_rgb(filters: list[int]) -> None:
    lines = pattern(9, 7, 3)
    data = make_png(9, 7, lines, colour_type=2, bpp=3, filters=filters)
    assert list(decode_png(data).rows) == lines


@pytest.mark.parametrize("filters", [[1], [3], [4], [2, 4, 3]])
def test_every_filter_type_with_alpha_over_white(filters: list[int]) -> None:
    lines = pattern(6, 5, 4)
    data = make_png(6, 5, lines, colour_type=6, bpp=4, filters=filters)
    picture = decode_png(data)
    for y, line in enumerate(lines):
        for x in range(6):
            r, g, b, a = line[4 * x : 4 * x + 4]
            expected = tuple((v * a + 255 * (255 - a) + 127) // 255 for v in (r, g, b))
            assert picture.pixel(x, y) == expected


def test_grey_grey_alpha_and_palette() -> None:
    grey = pattern(5, 4, 1)
    picture = decode_png(make_png(5, 4, grey, colour_type=0, bpp=1, filters=[4, 1]))
    assert picture.pixel(3, 2) == (grey[2][3],) * 3

    grey_alpha = [bytes([200, 255, 10, 0]) * 2]
    picture = decode_png(make_png(4, 1, grey_alpha, colour_type=4, bpp=2, filters=[3]))
    assert picture.pixel(0, 0) == (200, 200, 200)
    assert picture.pixel(1, 0) == (255, 255, 255)  # fully transparent: the white behind

    palette = chunk(b"PLTE", bytes([255, 0, 0, 0, 0, 255, 0, 128, 0])) + chunk(b"tRNS", b"\xff\x00")
    lines = [bytes([0, 1, 2, 0]), bytes([2, 2, 1, 0])]
    picture = decode_png(make_png(4, 2, lines, colour_type=3, bpp=1, filters=[2], extra=palette))
    assert picture.pixel(0, 0) == (255, 0, 0)
    assert picture.pixel(1, 0) == (255, 255, 255)  # palette entry 1 is transparent
    assert picture.pixel(0, 1) == (0, 128, 0)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xd8\xff\xe0 a jpeg", "not a PNG"),
        (make_png(2, 2, [bytes(12)] * 2, colour_type=2, bpp=6, filters=[0], depth=16), "16-bit"),
        (make_png(2, 2, [bytes(6)] * 2, colour_type=2, bpp=3, filters=[0], interlace=1), "interl"),
        (make_png(2, 1, [bytes(2)], colour_type=3, bpp=1, filters=[0]), "PLTE"),
        (make_png(2, 1, [bytes(6)], colour_type=2, bpp=3, filters=[0])[:-12], "no IEND"),
        (make_png(2, 1, [bytes(6)], colour_type=2, bpp=3, filters=[0])[:-20], "truncated IDAT"),
    ],
    ids=["jpeg", "16-bit", "interlaced", "no-palette", "no-iend", "truncated"],
)
def test_what_it_does_not_read_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(Undecodable, match=reason):
        decode_png(data)


def test_a_bad_filter_byte_and_too_many_pixels_are_refused() -> None:
    good = make_png(3, 2, pattern(3, 2, 3), colour_type=2, bpp=3, filters=[0])
    with pytest.raises(Undecodable, match="pixels"):
        decode_png(good, max_pixels=5)
    raw = b"\x07" + bytes(9) + b"\x00" + bytes(9)
    header = struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0)
    bad = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(Undecodable, match="filter type 7"):
        decode_png(bad)
