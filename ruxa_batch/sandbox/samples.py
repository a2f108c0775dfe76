"""Sample product photos for the quick start, drawn from nothing but code (no licence to mind).

``python -m ruxa_batch.sandbox.samples manifests/photos`` writes ``<sku>.png`` for each row of
``products.csv`` (by default the one beside the folder): the product as simple shaded shapes on a
plain studio backdrop with a soft shadow, chosen by words in its description (a mug, a scarf, a
candle in a jar, a beanie, a folded throw, a desk lamp; anything else is a parcel) and coloured by
its colour words. The output is deterministic: the same CSV gives the same bytes, which a test
checks against the committed files.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ruxa_batch.sandbox.images import encode_png

WIDTH, HEIGHT = 320, 240
FLOOR = 176  # where the objects stand

Colour = tuple[float, float, float]
Distance = Callable[[float, float], float]  # signed, in pixels: negative inside
Shade = Callable[[float, float], Colour]

COLOURS: dict[str, Colour] = {
    "ember red": (176, 38, 28),
    "rust orange": (183, 72, 22),
    "amber": (205, 128, 34),
    "moss green": (96, 122, 52),
    "ochre": (204, 146, 38),
    "copper": (186, 112, 58),
    "red": (180, 40, 40),
    "orange": (214, 110, 30),
    "green": (60, 130, 70),
    "blue": (50, 90, 170),
    "yellow": (220, 180, 40),
    "grey": (130, 130, 130),
    "black": (45, 45, 48),
    "white": (235, 235, 230),
}
WAX: Colour = (242, 232, 212)
LABEL: Colour = (236, 226, 200)


class Canvas:
    """RGB pixels as floats, painted shape by shape with anti-aliased edges."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels: list[list[Colour]] = []
        for y in range(height):
            # A studio sweep: lighter at the top, a soft floor below the horizon.
            t = y / (height - 1)
            base = 238 - 22 * t if y < FLOOR else 222 - 10 * (y - FLOOR) / (height - FLOOR)
            self.pixels.append([(base, base - 3, base - 8)] * width)

    def shape(
        self, box: tuple[float, float, float, float], distance: Distance, shade: Shade
    ) -> None:
        """Paint where ``distance`` < 0 within ``box`` (x0, y0, x1, y1), coloured by ``shade``."""
        x0, y0, x1, y1 = box
        for y in range(max(0, int(y0) - 1), min(self.height, int(y1) + 2)):
            row = self.pixels[y]
            for x in range(max(0, int(x0) - 1), min(self.width, int(x1) + 2)):
                cover = 0.5 - distance(x + 0.5, y + 0.5)
                if cover <= 0:
                    continue
                colour = shade(x + 0.5, y + 0.5)
                if cover >= 1:
                    row[x] = colour
                else:
                    old = row[x]
                    row[x] = (
                        old[0] + (colour[0] - old[0]) * cover,
                        old[1] + (colour[1] - old[1]) * cover,
                        old[2] + (colour[2] - old[2]) * cover,
                    )

    def shadow(self, cx: float, cy: float, rx: float, ry: float, strength: float) -> None:
        """Darken the floor in a soft ellipse, strongest at its centre."""
        for y in range(max(0, int(cy - ry)), min(self.height, int(cy + ry) + 1)):
            row = self.pixels[y]
            for x in range(max(0, int(cx - rx)), min(self.width, int(cx + rx) + 1)):
                d = ((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2
                if d < 1:
                    k = 1 - strength * (1 - d) ** 2
                    old = row[x]
                    row[x] = (old[0] * k, old[1] * k, old[2] * k)

    def rows(self) -> list[bytearray]:
        """The picture as 8-bit RGB rows."""
        return [
            bytearray(min(255, max(0, round(v))) for pixel in row for v in pixel)
            for row in self.pixels
        ]


# --- distances and shading ----------------------------------------------------------------------


def ellipse(cx: float, cy: float, rx: float, ry: float) -> Distance:
    return lambda x, y: (math.hypot((x - cx) / rx, (y - cy) / ry) - 1) * min(rx, ry)


def box(x0: float, y0: float, x1: float, y1: float, radius: float = 0.0) -> Distance:
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 - radius, (y1 - y0) / 2 - radius

    def distance(x: float, y: float) -> float:
        qx, qy = abs(x - cx) - hx, abs(y - cy) - hy
        outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
        return outside + min(max(qx, qy), 0.0) - radius

    return distance


def segment(ax: float, ay: float, bx: float, by: float, radius: float) -> Distance:
    def distance(x: float, y: float) -> float:
        px, py, vx, vy = x - ax, y - ay, bx - ax, by - ay
        t = max(0.0, min(1.0, (px * vx + py * vy) / (vx * vx + vy * vy)))
        return math.hypot(px - vx * t, py - vy * t) - radius

    return distance


def union(*parts: Distance) -> Distance:
    return lambda x, y: min(part(x, y) for part in parts)


def cut(shape: Distance, hole: Distance) -> Distance:
    return lambda x, y: max(shape(x, y), -hole(x, y))


def taper(cx: float, y0: float, y1: float, r0: float, r1: float) -> Distance:
    """A trapezoid, ``r0`` wide (half) at ``y0`` and ``r1`` at ``y1``: a lamp shade's side view."""

    def distance(x: float, y: float) -> float:
        t = (y - y0) / (y1 - y0)
        return max(abs(x - cx) - (r0 + (r1 - r0) * t), y0 - y, y - y1)

    return distance


def lit(colour: Colour, light: float, shine: float = 0.0) -> Colour:
    """``colour`` at brightness ``light`` (about 0.3 to 1.2) plus a white highlight ``shine``."""
    return (
        colour[0] * light + (255 - colour[0]) * shine,
        colour[1] * light + (255 - colour[1]) * shine,
        colour[2] * light + (255 - colour[2]) * shine,
    )


def round_shade(
    colour: Colour,
    cx: float,
    rx: float,
    *,
    gloss: float = 0.0,
    texture: Callable[[float, float], float] | None = None,
) -> Shade:
    """Shading of an upright round body lit from the upper left: dark at the right edge."""

    def shade(x: float, y: float) -> Colour:
        u = max(-1.0, min(1.0, (x - cx) / rx))
        facing = -0.5 * u + 0.86 * math.sqrt(1 - u * u)
        light = 0.42 + 0.7 * max(0.0, facing)
        if texture is not None:
            light *= texture(x, y)
        shine = gloss * max(0.0, 1 - abs(u + 0.45) * 7) ** 2
        return lit(colour, light, shine)

    return shade


def ball_shade(
    colour: Colour, cx: float, cy: float, rx: float, ry: float, gloss: float = 0.0
) -> Shade:
    def shade(x: float, y: float) -> Colour:
        u, v = (x - cx) / rx, (y - cy) / ry
        z = math.sqrt(max(0.0, 1 - u * u - v * v))
        facing = -0.45 * u - 0.5 * v + 0.74 * z
        shine = gloss * max(0.0, facing) ** 24
        return lit(colour, 0.4 + 0.72 * max(0.0, facing), shine)

    return shade


def flat(colour: Colour, light: float = 1.0) -> Shade:
    return lambda x, y: lit(colour, light)


def ribs(period: float, depth: float) -> Callable[[float, float], float]:
    """Knitted ribs: vertical stripes of light and shade."""
    return lambda x, y: 1 - depth * abs(math.sin(math.pi * x / period))


# --- products -----------------------------------------------------------------------------------


def mug(canvas: Canvas, colour: Colour) -> None:
    cx, top, bottom, rx, ry = 150.0, 88.0, FLOOR - 6.0, 52.0, 12.0
    canvas.shadow(cx + 14, FLOOR - 2, 92, 16, 0.35)
    body_shade = round_shade(colour, cx, rx, gloss=0.55)
    handle = cut(ellipse(cx + rx + 4, 126, 28, 34), ellipse(cx + rx + 4, 126, 15, 21))
    canvas.shape((cx + rx - 20, 90, cx + rx + 34, 162), handle, round_shade(colour, cx, rx + 30))
    body = union(box(cx - rx, top, cx + rx, bottom), ellipse(cx, bottom, rx, ry))
    canvas.shape((cx - rx, top - ry, cx + rx, bottom + ry), body, body_shade)
    canvas.shape(
        (cx - rx, top - ry, cx + rx, top + ry), ellipse(cx, top, rx, ry), flat(colour, 1.08)
    )
    inside = ellipse(cx, top + 1.5, rx - 5, ry - 3)
    canvas.shape((cx - rx, top - ry, cx + rx, top + ry), inside, flat(colour, 0.45))
    coffee = ellipse(cx, top + 4, rx - 9, ry - 6)
    canvas.shape((cx - rx, top - ry, cx + rx, top + ry), coffee, flat((70, 40, 24), 1.0))


def scarf(canvas: Canvas, colour: Colour) -> None:
    canvas.shadow(160, FLOOR - 2, 120, 18, 0.3)
    knit = ribs(5.0, 0.12)
    for n, (y0, y1, inset) in enumerate(((132, FLOOR - 4, 0), (104, 140, 10), (78, 112, 20))):
        cx = 150.0 + 4 * n
        fold = box(60 + inset, y0, 240 - inset, y1, 14)
        canvas.shape((60, y0, 240, y1), fold, round_shade(colour, cx, 110, texture=knit))
    tail = box(218, 96, 256, FLOOR - 18, 8)
    canvas.shape((218, 96, 256, FLOOR - 18), tail, round_shade(colour, 248, 40, texture=knit))
    for x in range(221, 254, 4):  # the fringe
        fringe = segment(x, FLOOR - 20, x + 1, FLOOR - 4, 1.3)
        canvas.shape((x - 2, FLOOR - 21, x + 3, FLOOR - 2), fringe, flat(colour, 0.8))


def candle(canvas: Canvas, colour: Colour) -> None:
    cx, top, bottom, rx, ry = 160.0, 84.0, FLOOR - 6.0, 46.0, 10.0
    canvas.shadow(cx + 10, FLOOR - 2, 80, 14, 0.3)
    glass = union(box(cx - rx, top, cx + rx, bottom), ellipse(cx, bottom, rx, ry))
    canvas.shape(
        (cx - rx, top - ry, cx + rx, bottom + ry), glass, round_shade(colour, cx, rx, gloss=0.7)
    )
    canvas.shape(
        (cx - rx, top - ry, cx + rx, top + ry), ellipse(cx, top, rx, ry), flat(colour, 1.15)
    )
    wax = ellipse(cx, top + 8, rx - 5, ry - 3)
    canvas.shape((cx - rx, top - ry, cx + rx, top + 2 * ry), wax, flat(WAX, 0.95))
    label = box(cx - rx, 112, cx + rx, 150)
    canvas.shape((cx - rx, 112, cx + rx, 150), label, round_shade(LABEL, cx, rx))
    stripe = box(cx - rx, 128, cx + rx, 133)
    canvas.shape((cx - rx, 128, cx + rx, 133), stripe, round_shade((120, 80, 50), cx, rx))
    canvas.shape(
        (cx - 2, top - 6, cx + 2, top + 9),
        segment(cx, top - 4, cx, top + 7, 1.2),
        flat((40, 30, 25)),
    )
    flame = ellipse(cx, top - 16, 5, 12)
    canvas.shape(
        (cx - 6, top - 29, cx + 6, top - 3), flame, ball_shade((255, 190, 70), cx, top - 18, 6, 14)
    )


def beanie(canvas: Canvas, colour: Colour) -> None:
    cx = 160.0
    canvas.shadow(cx + 10, FLOOR - 2, 100, 15, 0.32)
    knit = ribs(7.0, 0.18)
    dome = cut(ellipse(cx, 150, 78, 84), box(0, 150, WIDTH, HEIGHT))
    canvas.shape((cx - 80, 64, cx + 80, 152), dome, round_shade(colour, cx, 78, texture=knit))
    cuff = box(cx - 84, 136, cx + 84, FLOOR - 4, 10)
    canvas.shape(
        (cx - 84, 136, cx + 84, FLOOR - 4),
        cuff,
        round_shade(colour, cx, 84, texture=ribs(5.0, 0.3)),
    )
    pompom = ellipse(cx, 60, 24, 22)
    canvas.shape((cx - 25, 37, cx + 25, 83), pompom, ball_shade(lit(colour, 1.1), cx, 60, 24, 22))


def throw(canvas: Canvas, colour: Colour) -> None:
    canvas.shadow(165, FLOOR - 2, 118, 17, 0.32)

    def chunky(x: float, y: float) -> float:
        return 0.86 + 0.14 * abs(math.sin(math.pi * x / 11) * math.cos(math.pi * y / 9))

    for n in range(4):
        y0 = FLOOR - 30 - 26 * n
        layer = box(64 + 6 * n, y0, 262 - 4 * n, y0 + 30, 13)
        shade = round_shade(lit(colour, 1 - 0.04 * n), 160, 120, texture=chunky)
        canvas.shape((64, y0, 262, y0 + 30), layer, shade)


def lamp(canvas: Canvas, colour: Colour) -> None:
    canvas.shadow(150, FLOOR - 2, 90, 14, 0.3)
    base = union(box(100, FLOOR - 18, 180, FLOOR - 8), ellipse(140, FLOOR - 8, 40, 7))
    canvas.shape((100, FLOOR - 26, 180, FLOOR), base, round_shade(colour, 140, 40, gloss=0.8))
    canvas.shape(
        (96, FLOOR - 26, 184, FLOOR - 10), ellipse(140, FLOOR - 18, 40, 7), flat(colour, 1.15)
    )
    metal = round_shade(colour, 140, 30, gloss=0.6)
    canvas.shape((130, 80, 155, FLOOR - 14), segment(142, FLOOR - 18, 150, 92, 4.5), metal)
    canvas.shape(
        (145, 50, 215, 100), segment(150, 92, 206, 58, 4.5), round_shade(colour, 180, 30, gloss=0.6)
    )
    canvas.shape(
        (196, 48, 216, 68), ellipse(206, 58, 8, 8), ball_shade(colour, 206, 58, 8, 8, gloss=0.8)
    )
    shade = taper(222, 56, 120, 14, 42)
    canvas.shape((178, 54, 266, 122), shade, round_shade(colour, 222, 42, gloss=0.9))
    canvas.shape((178, 112, 266, 128), ellipse(222, 120, 42, 7), flat((255, 236, 180), 1.0))


def parcel(canvas: Canvas, colour: Colour) -> None:
    canvas.shadow(165, FLOOR - 2, 100, 15, 0.3)
    canvas.shape(
        (90, 86, 230, FLOOR - 4), box(90, 86, 230, FLOOR - 4, 4), round_shade(colour, 160, 140)
    )
    canvas.shape((152, 86, 168, FLOOR - 4), box(152, 86, 168, FLOOR - 4), flat(LABEL, 0.9))


PRODUCTS: tuple[tuple[tuple[str, ...], Callable[[Canvas, Colour], None]], ...] = (
    (("mug", "cup"), mug),
    (("scarf",), scarf),
    (("candle",), candle),
    (("beanie", "hat"), beanie),
    (("throw", "blanket"), throw),
    (("lamp",), lamp),
)


def colour_of(description: str) -> Colour:
    """The colour its words name, the longest name first (``ember red`` before ``red``)."""
    text = description.lower()
    for name in sorted(COLOURS, key=len, reverse=True):
        if name in text:
            return COLOURS[name]
    return (120, 110, 100)


def photo(description: str) -> bytes:
    """A PNG product shot of the product ``description`` names."""
    text = description.lower()
    draw = next((draw for words, draw in PRODUCTS if any(w in text for w in words)), parcel)
    canvas = Canvas(WIDTH, HEIGHT)
    draw(canvas, colour_of(description))
    return encode_png(
        WIDTH, HEIGHT, canvas.rows(), text={"Comment": f"sample photo: {description}"}
    )


def write_samples(folder: Path, products: Path) -> list[Path]:
    """Write ``<sku>.png`` into ``folder`` for each row (``sku``, ``product``) of ``products``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with products.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            path = folder / f"{row['sku']}.png"
            path.write_bytes(photo(row["product"]))
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ruxa_batch.sandbox.samples FOLDER [--products CSV]``."""
    parser = argparse.ArgumentParser(
        prog="python -m ruxa_batch.sandbox.samples",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("folder", type=Path, help="where the PNGs go, e.g. manifests/photos")
    parser.add_argument(
        "--products", type=Path, help="the CSV of sku,product [default: FOLDER/../products.csv]"
    )
    args = parser.parse_args(argv)
    products = args.products or args.folder.parent / "products.csv"
    for path in write_samples(args.folder, products):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
