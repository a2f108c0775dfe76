"""Small, real result images without an image library: a PNG and a baseline JPEG encoder.

The picture is drawn from a hash of a key (the task id), and the key is also written into the file
(a PNG ``tEXt`` chunk, a JPEG ``COM`` segment), so two tasks can never return the same bytes.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from collections.abc import Sequence

Rows = Sequence[bytes | bytearray]  # one ``width * 3`` bytes RGB row per line, top to bottom


def dimensions(aspect: str, *, long_side: int) -> tuple[int, int]:
    """``(width, height)`` for an aspect ratio such as ``"16:9"``, the longer side ``long_side``."""
    across, down = (int(part) for part in aspect.split(":"))
    if across >= down:
        return long_side, max(1, round(long_side * down / across))
    return max(1, round(long_side * across / down)), long_side


def render(key: str, *, width: int, height: int, fmt: str) -> bytes:
    """The image for ``key`` in ``fmt`` (``png`` or ``jpeg``)."""
    return encode(key, draw(key, width=width, height=height), width=width, height=height, fmt=fmt)


def encode(key: str, rows: Rows, *, width: int, height: int, fmt: str) -> bytes:
    """``rows`` as a ``fmt`` file (``png`` or ``jpeg``) that carries ``key`` in its metadata."""
    if fmt == "png":
        return encode_png(width, height, rows, text={"Comment": key})
    if fmt == "jpeg":
        return encode_jpeg(width, height, rows, comment=key)
    raise ValueError(f"unknown image format {fmt!r}")


def draw(key: str, *, width: int, height: int) -> list[bytearray]:
    """RGB rows of a picture (colour bands and two discs) chosen by a hash of ``key``."""
    h = hashlib.sha256(key.encode("utf-8")).digest()
    period = max(width, height)
    # A triangle wave over one period, repeated so that every band of a row is one slice (fast).
    wave = bytes(abs(510 * i // period - 255) for i in range(period))
    steps = [(h[c] % 3 + 1, h[c + 3] % 5 - 2, h[c + 6] % period) for c in range(3)]
    waves = wave * (width * 3 // period + 2)
    rows = []
    for y in range(height):
        row = bytearray(width * 3)
        for c, (dx, dy, phase) in enumerate(steps):
            start = (y * dy + phase) % period
            row[c::3] = waves[start : start + width * dx : dx]
        rows.append(row)
    for d in range(2):
        colour = bytes(h[9 + 6 * d : 12 + 6 * d])
        cx = h[12 + 6 * d] * width // 256
        cy = h[13 + 6 * d] * height // 256
        radius = max(1, (h[14 + 6 * d] % 32 + 16) * min(width, height) // 100)
        for y in range(max(0, cy - radius), min(height, cy + radius + 1)):
            half = math.isqrt(radius * radius - (y - cy) ** 2)
            x0, x1 = max(0, cx - half), min(width, cx + half + 1)
            rows[y][x0 * 3 : x1 * 3] = colour * (x1 - x0)
    return rows


# --- PNG -------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(width: int, height: int, rows: Rows, *, text: dict[str, str] | None = None) -> bytes:
    """An 8-bit RGB PNG of ``rows``, with optional Latin-1 ``tEXt`` entries."""
    raw = b"".join(b"\x00" + bytes(row) for row in rows)  # filter type 0 on every line
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    for name, value in (text or {}).items():
        entry = name.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace")
        chunks.append(_png_chunk(b"tEXt", entry))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(raw, 6)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


# --- JPEG (baseline, Huffman, YCbCr 4:2:0) -------------------------------------------------------
# Tables from ITU-T T.81 Annex K, in natural (row-major) order.

LUMA_QUANT = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
CHROMA_QUANT = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip

# ZIGZAG[k] is the natural index of the k-th coefficient in zig-zag order.
ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
)  # fmt: skip

# Huffman tables as (number of codes of each length 1..16, symbols in code order).
DC_LUMA = ((0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0), tuple(range(12)))
DC_CHROMA = ((0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0), tuple(range(12)))
AC_LUMA = (
    (0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D),
    bytes.fromhex(
        "01020300041105122131410613516107227114328191a1082342b1c11552d1f0"
        "2433627282090a161718191a25262728292a3435363738393a434445464748494a"
        "535455565758595a636465666768696a737475767778797a838485868788898a"
        "92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7"
        "c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa"
    ),
)
AC_CHROMA = (
    (0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77),
    bytes.fromhex(
        "000102031104052131061241510761711322328108144291a1b1c109233352f0"
        "156272d10a162434e125f11718191a262728292a35363738393a434445464748"
        "494a535455565758595a636465666768696a737475767778797a828384858687"
        "88898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3"
        "c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa"
    ),
)

# The fast transform's outputs are scaled by these factors (times 8 in 2-D); quantisation undoes it.
_AAN_SCALE = tuple(1.0 if k == 0 else math.cos(k * math.pi / 16) * math.sqrt(2) for k in range(8))


def _aan(
    d0: float, d1: float, d2: float, d3: float, d4: float, d5: float, d6: float, d7: float
) -> tuple[float, float, float, float, float, float, float, float]:
    """The 8-point forward DCT of Arai, Agui and Nakajima (IJG ``jfdctflt.c``), scaled."""
    t0, t7, t1, t6 = d0 + d7, d0 - d7, d1 + d6, d1 - d6
    t2, t5, t3, t4 = d2 + d5, d2 - d5, d3 + d4, d3 - d4
    e10, e13, e11, e12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    z1 = (e12 + e13) * 0.707106781
    o10, o11, o12 = t4 + t5, t5 + t6, t6 + t7
    z5 = (o10 - o12) * 0.382683433
    z2 = 0.541196100 * o10 + z5
    z4 = 1.306562965 * o12 + z5
    z3 = o11 * 0.707106781
    z11, z13 = t7 + z3, t7 - z3
    return (e10 + e11, z11 + z4, e13 + z1, z13 - z2, e10 - e11, z13 + z2, e13 - z1, z11 - z4)


def _scaled(table: Sequence[int], quality: int) -> tuple[int, ...]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality  # the IJG convention
    return tuple(min(255, max(1, (q * scale + 50) // 100)) for q in table)


def _codes(spec: tuple[Sequence[int], Sequence[int]]) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length) for a canonical Huffman table."""
    counts, symbols = spec
    table: dict[int, tuple[int, int]] = {}
    code = 0
    k = 0
    for length, count in enumerate(counts, start=1):
        for _ in range(count):
            table[symbols[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return table


_TABLES = {
    "dc0": _codes(DC_LUMA),
    "ac0": _codes(AC_LUMA),
    "dc1": _codes(DC_CHROMA),
    "ac1": _codes(AC_CHROMA),
}


class _BitWriter:
    """Entropy-coded bytes, with the 0xFF -> 0xFF 0x00 stuffing the format requires."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._acc = 0
        self._bits = 0

    def write(self, code: int, length: int) -> None:
        self._acc = (self._acc << length) | code
        self._bits += length
        while self._bits >= 8:
            self._bits -= 8
            byte = (self._acc >> self._bits) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0)
        self._acc &= (1 << self._bits) - 1

    def flush(self) -> bytes:
        if self._bits:
            self.write((1 << (8 - self._bits)) - 1, 8 - self._bits)  # pad with one-bits
        return bytes(self.out)


Quantiser = tuple[tuple[int, int, float], ...]


def _quantiser(quant: Sequence[int]) -> Quantiser:
    """Per zig-zag position: the horizontal and vertical frequency and the factor to apply."""
    return tuple(
        (k % 8, k // 8, 1 / (quant[k] * _AAN_SCALE[k % 8] * _AAN_SCALE[k // 8] * 8)) for k in ZIGZAG
    )


def _encode_block(
    block: Sequence[float],
    quantiser: Quantiser,
    previous_dc: int,
    dc: dict[int, tuple[int, int]],
    ac: dict[int, tuple[int, int]],
    bits: _BitWriter,
) -> int:
    """Transform, quantise and entropy-code one level-shifted 8x8 block; returns its DC value."""
    rows = [_aan(*block[i : i + 8]) for i in range(0, 64, 8)]
    columns = [_aan(*column) for column in zip(*rows, strict=True)]
    zigzag = [round(columns[u][v] * factor) for u, v, factor in quantiser]

    # Each Huffman code and the value bits after it go out in one write.
    diff = zigzag[0] - previous_dc
    size = abs(diff).bit_length()
    code, length = dc[size]
    bits.write((code << size) | (diff if diff >= 0 else diff + (1 << size) - 1), length + size)
    run = 0
    for value in zigzag[1:]:
        if not value:
            run += 1
            continue
        while run > 15:
            bits.write(*ac[0xF0])  # sixteen zeros
            run -= 16
        size = abs(value).bit_length()
        code, length = ac[(run << 4) | size]
        bits.write(
            (code << size) | (value if value > 0 else value + (1 << size) - 1), length + size
        )
        run = 0
    if run:
        bits.write(*ac[0x00])  # end of block
    return zigzag[0]


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def _huffman_segment(table_class_id: int, spec: tuple[Sequence[int], Sequence[int]]) -> bytes:
    counts, symbols = spec
    return bytes([table_class_id, *counts, *symbols])


Plane = list[list[float]]


def _quads(top: bytes, bottom: bytes) -> list[int]:
    """Sums over the 2x2 squares of one colour channel on two lines."""
    return [
        a + b + c + d
        for a, b, c, d in zip(top[0::2], top[1::2], bottom[0::2], bottom[1::2], strict=True)
    ]


def _ycbcr(rows: Rows, width: int, height: int) -> tuple[Plane, Plane, Plane]:
    """Level-shifted Y, Cb and Cr planes padded to whole 16x16 squares by repeating the edges.

    Chroma is converted from 2x2 sums: the conversion is linear, so this equals subsampling it.
    """
    pad = -(-width // 16) * 16 - width
    luma: Plane = []
    cb: Plane = []
    cr: Plane = []
    for y in range(0, -(-height // 16) * 16, 2):
        channels = []
        for line in (y, y + 1):
            row = bytes(rows[min(line, height - 1)])
            row += row[-3:] * pad
            red, green, blue = row[0::3], row[1::3], row[2::3]
            luma.append(
                [
                    0.299 * r + 0.587 * g + 0.114 * b - 128
                    for r, g, b in zip(red, green, blue, strict=True)
                ]
            )
            channels.append((red, green, blue))
        (red0, green0, blue0), (red1, green1, blue1) = channels
        reds, greens, blues = _quads(red0, red1), _quads(green0, green1), _quads(blue0, blue1)
        quads = list(zip(reds, greens, blues, strict=True))
        cb.append([(-0.168736 * r - 0.331264 * g + 0.5 * b) / 4 for r, g, b in quads])
        cr.append([(0.5 * r - 0.418688 * g - 0.081312 * b) / 4 for r, g, b in quads])
    return luma, cb, cr


def encode_jpeg(
    width: int, height: int, rows: Rows, *, comment: str = "", quality: int = 90
) -> bytes:
    """A baseline JFIF JPEG of ``rows`` (YCbCr, chroma subsampled 2x2)."""
    luma, cb, cr = _ycbcr(rows, width, height)

    def block(plane: list[list[float]], bx: int, by: int) -> list[float]:
        return [value for line in plane[by : by + 8] for value in line[bx : bx + 8]]

    luma_q, chroma_q = _scaled(LUMA_QUANT, quality), _scaled(CHROMA_QUANT, quality)
    luma_basis, chroma_basis = _quantiser(luma_q), _quantiser(chroma_q)
    dc0, ac0, dc1, ac1 = _TABLES["dc0"], _TABLES["ac0"], _TABLES["dc1"], _TABLES["ac1"]
    bits = _BitWriter()
    dc_y = dc_cb = dc_cr = 0
    for my in range(0, len(luma), 16):
        for mx in range(0, len(luma[0]), 16):
            for by, bx in ((my, mx), (my, mx + 8), (my + 8, mx), (my + 8, mx + 8)):
                dc_y = _encode_block(block(luma, bx, by), luma_basis, dc_y, dc0, ac0, bits)
            half_x, half_y = mx // 2, my // 2
            dc_cb = _encode_block(block(cb, half_x, half_y), chroma_basis, dc_cb, dc1, ac1, bits)
            dc_cr = _encode_block(block(cr, half_x, half_y), chroma_basis, dc_cr, dc1, ac1, bits)

    header = [
        b"\xff\xd8",
        _segment(0xFFE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
    ]
    if comment:
        header.append(_segment(0xFFFE, comment.encode("utf-8")[:65000]))
    header += [
        _segment(
            0xFFDB,
            bytes([0, *(luma_q[i] for i in ZIGZAG), 1, *(chroma_q[i] for i in ZIGZAG)]),
        ),
        _segment(
            0xFFC0,
            struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]),
        ),
        _segment(
            0xFFC4,
            _huffman_segment(0x00, DC_LUMA)
            + _huffman_segment(0x10, AC_LUMA)
            + _huffman_segment(0x01, DC_CHROMA)
            + _huffman_segment(0x11, AC_CHROMA),
        ),
        _segment(0xFFDA, bytes([3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0])),
    ]
    return b"".join(header) + bits.flush() + b"\xff\xd9"
