"""Image → tensor, identical for training, evaluation and the workers.

Thumbnail detectors (``resize``/``center-crop``, e.g. ``compact-cifake-v1``) resize
inputs of any size (bicubic, antialiased) to the model's square input: a large
photograph is judged heavily downscaled. ``native-crops`` detectors never resample;
:func:`native_crops` cuts windows at native pixel scale (see ``tiling``).
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
from common.detector.tiling import CropBox, crop_boxes
from common.images import decode_rgb


def load_image(path: Path) -> Image.Image:
    return decode_rgb(path.read_bytes())


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels (the
    orientation may be swapped: callers use the shorter side)."""
    with Image.open(path) as image:
        return image.size


def to_uint8_tensor(image: Image.Image, pre: Preprocessing) -> torch.Tensor:
    """RGB PIL image → uint8 CHW tensor at the model's input size."""
    size = pre.input_size
    if pre.resize == "native-crops":
        return _centre_native_crop(image, size)
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


def _centre_native_crop(image: Image.Image, size: int) -> torch.Tensor:
    """The central ``size`` window at native scale, edge-padded where the image is smaller.

    Only for fixed-shape batches (preloading, the robustness metric); the engine scores
    a small image at its own size instead (:func:`native_crops`).
    """
    left, top = max(0, (image.width - size) // 2), max(0, (image.height - size) // 2)
    window = image.crop((left, top, left + min(size, image.width), top + min(size, image.height)))
    array = np.asarray(window, dtype=np.uint8)
    pad_h, pad_w = size - array.shape[0], size - array.shape[1]
    if pad_h or pad_w:
        array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
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


def native_crops(image: Image.Image, pre: Preprocessing) -> tuple[torch.Tensor, list[CropBox]]:
    """The image's native-scale windows as one uint8 NCHW batch (all crops one shape)."""
    boxes = crop_boxes(image.width, image.height, pre.input_size, pre.max_crops)
    array = np.asarray(image, dtype=np.uint8)
    crops = [array[b.top : b.top + b.height, b.left : b.left + b.width] for b in boxes]
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    return batch, boxes


def model_input(image: Image.Image, pre: Preprocessing) -> tuple[torch.Tensor, list[CropBox]]:
    """One image as the model sees it: its normalised native crops and their boxes, or
    (thumbnail detectors) a batch of one resized image and no boxes. A native-crops
    detector's image score is the mean of the batch's logits."""
    if pre.resize != "native-crops":
        return batch_from_images([image], pre), []
    crops, boxes = native_crops(image, pre)
    return normalize(crops, pre), boxes


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
