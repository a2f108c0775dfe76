"""The sandbox's stdlib image encoders: real PNG and baseline JPEG files of the right size."""

from __future__ import annotations

import math
import struct
import time

import pytest
from helpers import jpeg_size, read_png

from ruxa_batch.sandbox import images


@pytest.mark.parametrize(
    ("aspect", "size"),
    [
        ("1:1", (64, 64)),
        ("16:9", (64, 36)),
        ("9:16", (36, 64)),
        ("4:3", (64, 48)),
        ("3:4", (48, 64)),
        ("3:2", (64, 43)),
        ("2:3", (43, 64)),
        ("5:4", (64, 51)),
        ("4:5", (51, 64)),
        ("21:9", (64, 27)),
    ],
)
def test_dimensions_follow_the_aspect_ratio(aspect: str, size: tuple[int, int]) -> None:
    assert images.dimensions(aspect, long_side=64) == size


def test_png_is_valid_and_lossless() -> None:
    rows = images.draw("task_a", width=64, height=36)
    width, height, raw = read_png(images.render("task_a", width=64, height=36, fmt="png"))
    assert (width, height) == (64, 36)
    assert raw == b"".join(b"\x00" + bytes(row) for row in rows)


def test_every_key_gives_different_bytes_and_is_written_into_the_file() -> None:
    for fmt in ("png", "jpeg"):
        outputs = {images.render(f"task_{i}", width=16, height=16, fmt=fmt) for i in range(50)}
        assert len(outputs) == 50
    assert b"task_7" in images.render("task_7", width=16, height=16, fmt="jpeg")
    assert images.render("task_7", width=16, height=16, fmt="png") == images.render(
        "task_7", width=16, height=16, fmt="png"
    )


def test_huffman_tables_are_complete() -> None:
    for counts, symbols in (images.DC_LUMA, images.DC_CHROMA, images.AC_LUMA, images.AC_CHROMA):
        assert sum(counts) == len(symbols) == len(set(symbols))
    assert sorted(images.ZIGZAG) == list(range(64))


# A small baseline JPEG decoder, enough to prove that what the sandbox writes decodes to its
# picture without an image library in the test dependencies.

# BASIS[u][x] = c(u)/2 * cos((2x+1)u*pi/16), straight from the definition of the DCT.
BASIS = [
    [
        (math.sqrt(0.5) if u == 0 else 1.0) / 2 * math.cos((2 * x + 1) * u * math.pi / 16)
        for x in range(8)
    ]
    for u in range(8)
]


def _decode_luma(data: bytes) -> tuple[int, int, list[list[float]]]:
    position = 2
    quant: dict[int, list[int]] = {}
    huffman: dict[int, dict[tuple[int, int], int]] = {}
    components: list[tuple[int, int, int, int]] = []  # id, h, v, quant table
    while True:
        marker, length = struct.unpack(">HH", data[position : position + 4])
        segment = data[position + 4 : position + 2 + length]
        position += 2 + length
        if marker == 0xFFDB:
            for offset in range(0, len(segment), 65):
                table = [0] * 64
                for k, value in enumerate(segment[offset + 1 : offset + 65]):
                    table[images.ZIGZAG[k]] = value
                quant[segment[offset] & 15] = table
        elif marker == 0xFFC0:
            height, width, count = struct.unpack(">HHB", segment[1:6])
            for c in range(count):
                cid, sampling, tq = segment[6 + 3 * c : 9 + 3 * c]
                components.append((cid, sampling >> 4, sampling & 15, tq))
        elif marker == 0xFFC4:
            offset = 0
            while offset < len(segment):
                table_id, counts = segment[offset], segment[offset + 1 : offset + 17]
                symbols = segment[offset + 17 : offset + 17 + sum(counts)]
                codes, code, k = {}, 0, 0
                for bit_length, n in enumerate(counts, start=1):
                    for _ in range(n):
                        codes[(bit_length, code)] = symbols[k]
                        code, k = code + 1, k + 1
                    code <<= 1
                huffman[table_id] = codes
                offset += 17 + sum(counts)
        elif marker == 0xFFDA:
            selectors = {segment[1 + 2 * i]: segment[2 + 2 * i] for i in range(segment[0])}
            break
    scan = data[position : data.rindex(b"\xff\xd9")].replace(b"\xff\x00", b"\xff")
    bits = "".join(f"{byte:08b}" for byte in scan)
    cursor = 0

    def read(n: int) -> int:
        nonlocal cursor
        value = int(bits[cursor : cursor + n] or "0", 2)
        cursor += n
        return value

    def symbol(table: dict[tuple[int, int], int]) -> int:
        code = 0
        for bit_length in range(1, 17):
            code = (code << 1) | read(1)
            if (bit_length, code) in table:
                return table[(bit_length, code)]
        raise AssertionError("no Huffman code matched")

    def extend(value: int, size: int) -> int:
        return value - (1 << size) + 1 if size and value < 1 << (size - 1) else value

    max_h = max(h for _, h, _, _ in components)
    max_v = max(v for _, _, v, _ in components)
    mcus_x = math.ceil(width / (8 * max_h))
    mcus_y = math.ceil(height / (8 * max_v))
    luma = [[0.0] * (mcus_x * 8 * max_h) for _ in range(mcus_y * 8 * max_v)]
    previous = dict.fromkeys(selectors, 0)
    for my in range(mcus_y):
        for mx in range(mcus_x):
            for cid, h, v, tq in components:
                dc_table, ac_table = huffman[selectors[cid] >> 4], huffman[16 | selectors[cid] & 15]
                for by in range(v):
                    for bx in range(h):
                        coefficients = [0] * 64
                        size = symbol(dc_table)
                        previous[cid] += extend(read(size), size)
                        coefficients[0] = previous[cid] * quant[tq][0]
                        k = 1
                        while k < 64:
                            rs = symbol(ac_table)
                            if rs == 0:
                                break
                            k += rs >> 4
                            size = rs & 15
                            if size:
                                natural = images.ZIGZAG[k]
                                coefficients[natural] = (
                                    extend(read(size), size) * quant[tq][natural]
                                )
                            k += 1
                        if cid != 1:
                            continue
                        for y in range(8):
                            for x in range(8):
                                total = sum(
                                    BASIS[u][x] * BASIS[w][y] * coefficients[w * 8 + u]
                                    for u in range(8)
                                    for w in range(8)
                                )
                                luma[(my * max_v + by) * 8 + y][(mx * max_h + bx) * 8 + x] = (
                                    total + 128
                                )
    assert len(bits) - cursor < 8, "entropy-coded data left over"
    return width, height, luma


@pytest.mark.parametrize("size", [(64, 36), (13, 5), (27, 64)])
def test_jpeg_decodes_to_the_picture(size: tuple[int, int]) -> None:
    width, height = size
    rows = images.draw("task_b", width=width, height=height)
    data = images.render("task_b", width=width, height=height, fmt="jpeg")
    assert jpeg_size(data) == size
    decoded_width, decoded_height, luma = _decode_luma(data)
    assert (decoded_width, decoded_height) == size
    error = 0.0
    for y in range(height):
        for x in range(width):
            r, g, b = rows[y][3 * x : 3 * x + 3]
            error += abs(0.299 * r + 0.587 * g + 0.114 * b - luma[y][x])
    assert error / (width * height) < 6  # quality 90: a few levels of 255 on average


def test_images_are_cheap_to_generate() -> None:
    # Generous bounds against regressions (measured ~2 ms and ~11 ms); the test machine is shared.
    for fmt, bound in (("png", 0.02), ("jpeg", 0.08)):
        timings = []
        for i in range(9):
            start = time.perf_counter()
            images.render(f"task_{i}", width=64, height=64, fmt=fmt)
            timings.append(time.perf_counter() - start)
        assert sorted(timings)[4] < bound, fmt
