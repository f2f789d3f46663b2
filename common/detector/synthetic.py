"""Images no detector of photographs-vs-generated has any basis to judge.

Random noise, solid colours and screenshots of rendered text: clearly outside both the
REAL and the FAKE training distributions. ``aigi fit-ood`` uses them (one seed) to choose
the OOD score; the tests and the benchmark draw other seeds.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("noise", "solid", "text")
#: Other kinds, never used to choose the score: how far its choice carries.
EXTRA_KINDS = ("gradient", "shapes")
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


def gradient_image(rng: np.random.Generator) -> Image.Image:
    """A linear blend between two random colours (a rendered background)."""
    w, h = _size(rng)
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:h, 0:w]
    t = (np.cos(angle) * x / w + np.sin(angle) * y / h).clip(0, 1)[..., None]
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return Image.fromarray((a + (b - a) * t).astype(np.uint8))


def shapes_image(rng: np.random.Generator) -> Image.Image:
    """Flat-coloured rectangles and ellipses on a flat background (clip art)."""
    w, h = _size(rng)
    image = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, h, 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (x0, y0, max(x1, x0 + 2), max(y1, y0 + 2))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


MAKERS = {
    "noise": noise_image,
    "solid": solid_image,
    "text": text_image,
    "gradient": gradient_image,
    "shapes": shapes_image,
}


def synthetic_ood(
    count_per_kind: int, seed: int, kinds: tuple[str, ...] = KINDS
) -> list[tuple[str, Image.Image]]:
    """``count_per_kind`` images of each kind, as (kind, image)."""
    rng = np.random.default_rng(seed)
    return [(kind, MAKERS[kind](rng)) for kind in kinds for _ in range(count_per_kind)]
