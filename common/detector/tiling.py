"""Native-scale crops: where a large image is looked at, and how crop maps are stitched.

A detector of generation artifacts must see pixels as the generator (or the camera) left
them; a thumbnail averages exactly those statistics away, and image size itself becomes
a shortcut (old generators' whole 256-px pictures against windows of large photos). So
a ``native-crops`` detector scores windows of ``size`` × ``size`` pixels cut from the
image at its own scale, never resampled:

* an image at least ``size`` on both sides gets crops of exactly ``size`` × ``size``,
  whatever its resolution (the same content at two sizes is judged on windows of one
  size);
* a side shorter than ``size`` is used at its own length: the crop is the whole
  extent, nothing is upscaled or padded with invented detail (the network is fully
  convolutional with global pooling, so any size from 1 px works);
* at most ``max_crops`` windows, spread as an ``nx × ny`` grid matched to the aspect
  ratio; each window sits at the centre of its grid cell, so when the budget covers
  the image (``nx = ceil(W / size)``) the windows tile it completely, and otherwise
  they sample it evenly away from the borders, where photographs are often blurred.

The crops' logits are averaged (a geometric mean of the odds): a photograph's windows
agree more often than not, and one odd window (a sharp edge, a flat sky) should not
flip the verdict on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CropBox:
    left: int
    top: int
    width: int
    height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """PIL's ``(left, upper, right, lower)``."""
        return (self.left, self.top, self.left + self.width, self.top + self.height)


def _grid(width: int, height: int, size: int, max_crops: int) -> tuple[int, int]:
    full_x = max(1, math.ceil(width / size))
    full_y = max(1, math.ceil(height / size))
    if full_x * full_y <= max_crops:
        return full_x, full_y
    aspect = math.log(full_x / full_y)
    best: tuple[int, float, int, int] | None = None
    for nx in range(1, min(full_x, max_crops) + 1):
        ny = min(full_y, max_crops // nx)
        if ny < 1:
            continue
        key = (nx * ny, -abs(math.log(nx / ny) - aspect), nx, ny)
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None
    return best[2], best[3]


def _positions(extent: int, crop: int, count: int) -> list[int]:
    if count <= 1:
        return [(extent - crop) // 2]
    cell = extent / count
    return [
        int(min(max(round((i + 0.5) * cell - crop / 2), 0), extent - crop)) for i in range(count)
    ]


def crop_boxes(width: int, height: int, size: int, max_crops: int) -> list[CropBox]:
    """The windows a ``native-crops`` detector scores for an image of this size."""
    if width < 1 or height < 1:
        raise ValueError(f"an image needs at least one pixel, got {width}x{height}")
    if size < 1 or max_crops < 1:
        raise ValueError("crop size and max_crops must be positive")
    crop_w, crop_h = min(size, width), min(size, height)
    nx, ny = _grid(width, height, size, max_crops)
    return [
        CropBox(left, top, crop_w, crop_h)
        for top in _positions(height, crop_h, ny)
        for left in _positions(width, crop_w, nx)
    ]


def stitch(
    maps: Sequence[np.ndarray], boxes: Sequence[CropBox], width: int, height: int
) -> np.ndarray:
    """Per-crop heatmaps (each ``height × width`` of its box) → one map of the image.

    Overlaps are averaged; pixels no crop covered are 0 (no evidence was looked for
    there), so regions of interest land where the detector actually looked.
    """
    total = np.zeros((height, width), dtype=np.float32)
    weight = np.zeros((height, width), dtype=np.float32)
    for heat, crop in zip(maps, boxes, strict=True):
        if heat.shape != (crop.height, crop.width):
            raise ValueError(f"map of shape {heat.shape} does not fit crop {crop}")
        total[crop.top : crop.top + crop.height, crop.left : crop.left + crop.width] += heat
        weight[crop.top : crop.top + crop.height, crop.left : crop.left + crop.width] += 1.0
    return np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
