"""The quick start's sample photos are the generator's output, byte for byte, and small."""

from __future__ import annotations

import csv
from pathlib import Path

from helpers import REPO

from ruxa_batch.sandbox import samples
from ruxa_batch.sandbox.pngread import decode_png

PHOTOS = REPO / "manifests" / "photos"
PRODUCTS = REPO / "manifests" / "products.csv"


def test_the_committed_photos_are_what_the_generator_writes(hermetic: Path) -> None:
    with PRODUCTS.open(newline="", encoding="utf-8") as handle:
        skus = [row["sku"] for row in csv.DictReader(handle)]
    out = hermetic / "photos"
    assert samples.main([str(out), "--products", str(PRODUCTS)]) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(f"{sku}.png" for sku in skus)
    assert sorted(path.name for path in PHOTOS.iterdir()) == sorted(f"{sku}.png" for sku in skus)
    for sku in skus:
        made = (out / f"{sku}.png").read_bytes()
        assert made == (PHOTOS / f"{sku}.png").read_bytes(), (
            f"{sku}.png differs: run python -m ruxa_batch.sandbox.samples manifests/photos"
        )
        assert len(made) <= 60_000
        picture = decode_png(made)
        assert max(picture.width, picture.height) == 320


def test_each_product_is_drawn_on_a_plain_backdrop() -> None:
    picture = decode_png((PHOTOS / "mug-ember.png").read_bytes())
    corner = picture.pixel(2, 2)
    assert min(corner) > 200  # a light studio backdrop
    red, green, blue = picture.pixel(140, 140)  # the mug's body
    assert red > 2 * green and red > 2 * blue
    assert samples.colour_of("a wool scarf in rust orange") == samples.COLOURS["rust orange"]
    assert decode_png(samples.photo("a cardboard box")).width == 320  # unknown: a parcel
