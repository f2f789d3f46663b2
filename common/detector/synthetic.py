"""Images no detector of photographs-vs-generated has any basis to judge.

Random noise, solid colours and screenshots of rendered text: clearly outside both the
REAL and the FAKE training distributions. ``aigi fit-ood`` uses them (one seed) to choose
the OOD score; the tests and the benchmark draw other seeds.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("noise", "solid", "text")
_TEXT = (
    "the quarterly report shows revenue growth across all regions compared with last year "
    "please find attached the invoice for services rendered during the period error 404 "
    "page not found settings privacy account sign in forgot password terms of service "
    "def main(): return 0 import numpy as np for i in range(10): print(i) total amount due"
)
_WORDS = _TEXT.split(" ")


def _size(rng: np.random.Generator) -> tuple[int, int]:
    sizes = ((32, 32), (128, 128), (256, 256), (320, 240), (512, 384), (200, 600))
    return sizes[int(rng.integers(len(sizes)))]


def noise_image(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    if rng.random() < 0.5:
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        array = np.clip(rng.normal(128, 40 + 40 * rng.random(), (h, w, 3)), 0, 255)
    return Image.fromarray(array.astype(np.uint8))


def solid_image(rng: np.random.Generator) -> Image.Image:
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    return Image.new("RGB", _size(rng), colour)


def text_image(rng: np.random.Generator) -> Image.Image:
    """A screenshot-like page: light background, dark lines of words."""
    w, h = _size(rng)
    w, h = max(w, 160), max(h, 120)
    background = tuple(int(c) for c in rng.integers(225, 256, 3))
    image = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(rng.integers(11, 18)))
    colour = tuple(int(c) for c in rng.integers(0, 70, 3))
    y = 6
    while y < h - 14:
        words = [_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), 12)]
        draw.text((6, y), " ".join(words), fill=colour, font=font)
        y += int(rng.integers(16, 24))
    return image


def synthetic_ood(count_per_kind: int, seed: int) -> list[tuple[str, Image.Image]]:
    """``count_per_kind`` images of each kind, as (kind, image)."""
    rng = np.random.default_rng(seed)
    makers = {"noise": noise_image, "solid": solid_image, "text": text_image}
    return [(kind, makers[kind](rng)) for kind in KINDS for _ in range(count_per_kind)]
