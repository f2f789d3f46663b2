"""Image → tensor, identical for training, evaluation and the workers.

Inputs of any size are resized (bicubic, antialiased) to the model's square input.
For the shipped 32x32 detector this means a large photograph is judged at the scale
it was trained on: the whole picture, heavily downscaled. That is a deliberate
trade-off documented in the README ("where it fails").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from common.detector.config import Preprocessing
from common.images import decode_rgb


def load_image(path: Path) -> Image.Image:
    return decode_rgb(path.read_bytes())


def to_uint8_tensor(image: Image.Image, pre: Preprocessing) -> torch.Tensor:
    """RGB PIL image → uint8 CHW tensor at the model's input size."""
    size = pre.input_size
    if pre.resize == "center-crop":
        short = min(image.size)
        scale = size / short
        resized = image.resize(
            (max(size, round(image.width * scale)), max(size, round(image.height * scale))),
            Image.Resampling.BICUBIC,
        )
        left = (resized.width - size) // 2
        top = (resized.height - size) // 2
        image = resized.crop((left, top, left + size, top + size))
    elif image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def normalize(batch_uint8: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 NCHW (or CHW) → normalised float32."""
    x = batch_uint8.float().div_(255.0)
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


def denormalize(batch: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(pre.mean, dtype=batch.dtype, device=batch.device).view(-1, 1, 1)
    std = torch.tensor(pre.std, dtype=batch.dtype, device=batch.device).view(-1, 1, 1)
    return batch * std + mean


def batch_from_images(images: Sequence[Image.Image], pre: Preprocessing) -> torch.Tensor:
    return normalize(torch.stack([to_uint8_tensor(im, pre) for im in images]), pre)


def train_augmentation(
    size: int,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    jpeg: bool = False,
    blur: bool = False,
    rescale: bool = False,
    crop: str = "resized",
) -> v2.Compose:
    """A random crop + horizontal flip, plus optional robustness augmentations.

    ``crop="resized"`` is the report's RandomResizedCrop. ``crop="pad"`` shifts the
    image inside a reflect-padded frame instead: no resampling, so the pixel-level
    statistics that separate generated from photographed images survive.

    JPEG re-compression, blur and down/up-scaling are the augmentations known to help
    a detector generalise beyond the exact pipeline of its training images (Wang et
    al., CNNDetection); they are off by default.
    """
    cropper: v2.Transform
    if crop == "pad":
        cropper = v2.RandomCrop(size, padding=max(1, size // 8), padding_mode="reflect")
    elif crop == "resized":
        cropper = v2.RandomResizedCrop(size, scale=crop_scale, antialias=True)
    else:
        raise ValueError(f"unknown crop {crop!r}; use 'resized' or 'pad'")
    steps: list[v2.Transform] = [cropper, v2.RandomHorizontalFlip()]
    if jpeg:
        steps.append(v2.RandomApply([v2.JPEG(quality=(60, 95))], p=0.3))
    if blur:
        steps.append(v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.5))], p=0.2))
    if rescale:
        steps.append(v2.RandomApply([_DownUp(size)], p=0.2))
    return v2.Compose(steps)


class _DownUp(v2.Transform):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def transform(self, inpt: torch.Tensor, params: dict[str, object]) -> torch.Tensor:
        factor = float(np.random.uniform(0.5, 0.9))
        small = max(4, int(self.size * factor))
        down = F.resize(inpt, [small, small], antialias=True)
        return F.resize(down, [self.size, self.size], antialias=True)
