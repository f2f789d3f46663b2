"""Image-folder datasets in the REAL/FAKE layout, stratified splits and preloading."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common.detector.config import LABELS, Preprocessing
from common.detector.prepare import IMAGE_SUFFIXES
from common.detector.preprocess import load_image, to_uint8_tensor
from common.images import ImageDecodeError


class DatasetError(ValueError):
    """A data folder that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


def scan(root: Path) -> list[Sample]:
    """All images under ``root/REAL`` (label 0) and ``root/FAKE`` (label 1)."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; run `aigi prepare` to build one")
    samples: list[Sample] = []
    for label, name in enumerate(LABELS):
        folder = root / name
        if not folder.is_dir():
            continue
        samples.extend(
            Sample(p, label)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
    if not samples:
        raise DatasetError(
            f"no images in {root}/REAL or {root}/FAKE; run `aigi prepare SRC {root}` first"
        )
    return samples


def stratified_split(
    samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Per-class shuffle with a fixed seed; ``val_fraction`` of each class to validation."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError("val_fraction must lie inside (0, 1)")
    rng = np.random.default_rng(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for label in range(len(LABELS)):
        members = [s for s in samples if s.label == label]
        order = rng.permutation(len(members))
        n_val = round(len(members) * val_fraction)
        val.extend(members[i] for i in order[:n_val])
        train.extend(members[i] for i in order[n_val:])
    if len({s.label for s in train}) < 2:
        raise DatasetError("training needs images of both classes (REAL and FAKE)")
    return train, val


def summarize(samples: Sequence[Sample]) -> dict[str, object]:
    counts = {name: sum(1 for s in samples if s.label == i) for i, name in enumerate(LABELS)}
    digest = hashlib.sha256("\n".join(sorted(s.path.name for s in samples)).encode()).hexdigest()
    return {"n": len(samples), "per_class": counts, "files_sha256": digest[:16]}


def preload(
    samples: Sequence[Sample],
    pre: Preprocessing,
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image once into a uint8 NCHW tensor at the model's input size.

    Small data sets (CIFAKE: 100k images of 32x32 is 300 MB) then train without
    decoding a JPEG per step. Unreadable files stop with the file named.
    """
    size = pre.input_size
    images = torch.empty((len(samples), 3, size, size), dtype=torch.uint8)
    labels = torch.empty(len(samples), dtype=torch.long)
    for i, sample in enumerate(samples):
        try:
            images[i] = to_uint8_tensor(load_image(sample.path), pre)
        except ImageDecodeError as exc:
            raise DatasetError(f"{sample.path}: {exc}; remove or replace the file") from exc
        labels[i] = sample.label
        if progress and (i + 1) % 1000 == 0:
            progress(1000)
    return images, labels


class TensorImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """uint8 images + labels, with an optional per-sample uint8 → uint8 transform."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]
