"""A small PNG decoder on ``zlib``, so sandbox results can be drawn from the input picture.

It reads what simple tools write: 8 bits per sample, colour types 0 (grey), 2 (RGB), 3 (palette),
4 (grey + alpha) and 6 (RGBA), any of the five filter types, not interlaced. Everything else
(16-bit samples, Adam7, a damaged file) raises :class:`Undecodable`, and the caller falls back.
Transparent pixels are laid over white, as a product photo's cut-out would be shown.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pure-Python unfiltering costs about a second per few million pixels; larger inputs fall back.
MAX_PIXELS = 4_000_000
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class Undecodable(Exception):
    """A PNG this decoder does not read (or not a PNG at all); the message says why."""


@dataclass(frozen=True)
class Picture:
    """Decoded pixels: ``rows[y]`` holds ``width * 3`` bytes of RGB."""

    width: int
    height: int
    rows: tuple[bytes, ...]

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        """The RGB colour at ``(x, y)``."""
        row = self.rows[y]
        return row[3 * x], row[3 * x + 1], row[3 * x + 2]


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(SIGNATURE):
        raise Undecodable("not a PNG")
    chunks = []
    position = len(SIGNATURE)
    while position + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if len(body) != length:
            raise Undecodable(f"truncated {kind.decode('latin-1')} chunk")
        (crc,) = struct.unpack_from(">I", data, position + 8 + length)
        if zlib.crc32(kind + body) != crc:
            raise Undecodable(f"bad CRC in the {kind.decode('latin-1')} chunk")
        chunks.append((kind, body))
        position += 12 + length
        if kind == b"IEND":
            return chunks
    raise Undecodable("no IEND chunk")


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def unfilter(raw: bytes, *, width: int, height: int, bpp: int) -> list[bytes]:
    """The scanlines of inflated PNG data (a filter-type byte before each line), unfiltered."""
    stride = width * bpp
    if len(raw) < height * (stride + 1):
        raise Undecodable("image data too short")
    previous = bytes(stride)
    lines = []
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 0:
            pass
        elif kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                if i >= bpp:
                    left, corner = line[i - bpp], previous[i - bpp]
                else:
                    left = corner = 0
                line[i] = (line[i] + _paeth(left, previous[i], corner)) & 0xFF
        else:
            raise Undecodable(f"unknown filter type {kind} on line {y}")
        previous = bytes(line)
        lines.append(previous)
    return lines


def _over_white(colour: bytes, alpha: bytes) -> bytes:
    """``colour`` (one channel's samples) composited over white by ``alpha``."""
    return bytes(
        (value * a + 255 * (255 - a) + 127) // 255 for value, a in zip(colour, alpha, strict=True)
    )


def _to_rgb(
    line: bytes, colour_type: int, palette: bytes, palette_alpha: bytes, width: int
) -> bytes:
    rgb = bytearray(width * 3)
    if colour_type == 2:
        return line
    if colour_type == 0:
        rgb[0::3] = rgb[1::3] = rgb[2::3] = line
    elif colour_type == 4:
        grey = _over_white(line[0::2], line[1::2])
        rgb[0::3] = rgb[1::3] = rgb[2::3] = grey
    elif colour_type == 6:
        alpha = line[3::4]
        for c in range(3):
            rgb[c::3] = _over_white(line[c::4], alpha)
    else:  # 3: palette
        if max(line, default=0) * 3 + 3 > len(palette):
            raise Undecodable("palette index out of range")
        for x, index in enumerate(line):
            entry = palette[3 * index : 3 * index + 3]
            if index < len(palette_alpha):
                a = palette_alpha[index]
                entry = bytes((v * a + 255 * (255 - a) + 127) // 255 for v in entry)
            rgb[3 * x : 3 * x + 3] = entry
    return bytes(rgb)


def decode_png(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Picture:
    """The RGB pixels of ``data``; :class:`Undecodable` for anything outside the supported set."""
    chunks = _chunks(data)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise Undecodable("no IHDR chunk first")
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    if depth != 8:
        raise Undecodable(f"{depth}-bit samples (only 8-bit is read)")
    if colour_type not in _CHANNELS:
        raise Undecodable(f"unknown colour type {colour_type}")
    if compression or filtering:
        raise Undecodable("unknown compression or filter method")
    if interlace:
        raise Undecodable("interlaced")
    if not 0 < width * height <= max_pixels:
        raise Undecodable(f"{width}x{height} pixels (at most {max_pixels} are read)")
    palette = b"".join(body for kind, body in chunks if kind == b"PLTE")
    palette_alpha = b"".join(body for kind, body in chunks if kind == b"tRNS")
    if colour_type == 3 and not palette:
        raise Undecodable("palette image without a PLTE chunk")
    bpp = _CHANNELS[colour_type]
    try:
        inflater = zlib.decompressobj()
        # Never inflate more than the picture can hold: a small file may expand enormously.
        expected = height * (width * bpp + 1)
        raw = inflater.decompress(
            b"".join(body for kind, body in chunks if kind == b"IDAT"), expected
        )
    except zlib.error as exc:
        raise Undecodable(f"damaged image data ({exc})") from None
    lines = unfilter(raw, width=width, height=height, bpp=bpp)
    rows = tuple(_to_rgb(line, colour_type, palette, palette_alpha, width) for line in lines)
    return Picture(width, height, rows)
