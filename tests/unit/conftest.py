"""Tiny models and generated data for the detector and Grad-CAM tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 16,
}


def tiny_clip_config(head: str = "linear", frozen: bool = False):  # type: ignore[no-untyped-def]
    from common.detector.config import (
        CLIP_MEAN,
        CLIP_STD,
        ClipBackboneConfig,
        DetectorConfig,
        HeadConfig,
        Preprocessing,
    )

    return DetectorConfig(
        model_id=f"tiny-clip-{head}",
        backbone=ClipBackboneConfig(vision_config=TINY_CLIP, frozen=frozen),
        head=HeadConfig(kind=head, hidden=16),  # type: ignore[arg-type]
        preprocessing=Preprocessing(
            input_size=32, mean=CLIP_MEAN, std=CLIP_STD, resize="center-crop"
        ),
    )


def tiny_compact_config(head: str = "linear", size: int = 32):  # type: ignore[no-untyped-def]
    from common.detector.config import (
        CompactBackboneConfig,
        DetectorConfig,
        HeadConfig,
        Preprocessing,
    )

    return DetectorConfig(
        model_id=f"tiny-compact-{head}",
        backbone=CompactBackboneConfig(widths=(8, 16), blocks=(1, 1)),
        head=HeadConfig(kind=head, hidden=16),  # type: ignore[arg-type]
        preprocessing=Preprocessing(input_size=size),
    )


def smooth_image(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A 'photograph': smooth colour gradients."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-60, 60, (2, 3))
    image = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    return np.clip(image, 0, 255).astype(np.uint8)


def plant_texture(
    image: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int]
) -> np.ndarray:
    """Plant a high-frequency checkerboard texture (the 'artifact') inside box."""
    x0, y0, x1, y1 = box
    out = image.copy()
    yy, xx = np.mgrid[y0:y1, x0:x1]
    checker = ((xx + yy) % 2 * 2 - 1)[..., None] * rng.uniform(35, 60)
    out[y0:y1, x0:x1] = np.clip(out[y0:y1, x0:x1] + checker, 0, 255)
    return out


def write_dataset(
    root: Path,
    n_per_class: int = 60,
    size: int = 32,
    seed: int = 0,
    box: tuple[int, int, int, int] | None = None,
) -> Path:
    """REAL = smooth; FAKE = smooth + a planted texture (in ``box`` or everywhere)."""
    rng = np.random.default_rng(seed)
    for label in ("REAL", "FAKE"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            image = smooth_image(rng, size)
            if label == "FAKE":
                image = plant_texture(image, rng, box or (0, 0, size, size))
            Image.fromarray(image).save(root / label / f"{label.lower()}_{i}.png")
    return root


@pytest.fixture(scope="session")
def separable_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("separable"), n_per_class=60)


@pytest.fixture(scope="session")
def quadrant_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FAKE images carry their texture in the upper-left quadrant only."""
    return write_dataset(
        tmp_path_factory.mktemp("quadrant"), n_per_class=80, seed=1, box=(2, 2, 14, 14)
    )


@pytest.fixture(scope="session")
def trained_quadrant_model(quadrant_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from common.detector.training import TrainOptions, train

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("quadrant-model") / "ckpt"
    train(
        TrainOptions(
            data=quadrant_data,
            out=out,
            widths=(8, 16),
            blocks=(1, 1),
            epochs=8,
            batch_size=16,
            lr=3e-3,
            crop="pad",
            patience=10,
            show_progress=False,
            model_id="quadrant",
        )
    )
    return out
