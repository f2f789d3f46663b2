"""The models and images every benchmark uses, built the same way each time."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from common.detector.config import CompactBackboneConfig, DetectorConfig, Preprocessing
from common.detector.model import Detector

#: The shipped detector's architecture (``make train-shipped``).
SHIPPED_WIDTHS = (32, 64, 128)
SHIPPED_BLOCKS = (2, 2, 2)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class BenchModel:
    """A detector to measure, and where it came from (stored with the result)."""

    name: str
    model: Detector
    source: dict[str, Any] = field(default_factory=dict)


def compact_detector(
    widths: tuple[int, ...] = SHIPPED_WIDTHS,
    blocks: tuple[int, ...] = SHIPPED_BLOCKS,
    input_size: int = 32,
    model_id: str = "compact-random",
) -> Detector:
    torch.manual_seed(0)
    config = DetectorConfig(
        model_id=model_id,
        backbone=CompactBackboneConfig(widths=widths, blocks=blocks),
        preprocessing=Preprocessing(input_size=input_size),
    )
    return Detector(config).eval()


def tiny_detector() -> Detector:
    """A very small compact detector for smoke tests (verdicts arbitrary)."""
    return compact_detector((8, 16), (1, 1), 32, "bench-tiny-compact")


def tiny_native() -> BenchModel:
    """A scaled-down EfficientNet-Lite scoring 64-px native crops (smoke tests)."""
    from common.detector.config import EfficientNetBackboneConfig

    torch.manual_seed(0)
    config = DetectorConfig(
        model_id="bench-tiny-native",
        backbone=EfficientNetBackboneConfig(channel_multiplier=0.25, depth_multiplier=0.25),
        preprocessing=Preprocessing(input_size=64, resize="native-crops", max_crops=4),
    )
    return BenchModel("bench-tiny-native", Detector(config).eval(), {"random": True})


def shipped_or_fallback(folder: Path | None = None) -> BenchModel:
    """The shipped detector, or an untrained one with its architecture (and a note)."""
    from common.detector.checkpoint import default_checkpoint, load_checkpoint

    folder = folder or default_checkpoint()
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        model = load_checkpoint(folder)
        return BenchModel(
            model.config.model_id, model, {"checkpoint": str(folder), "shipped": True}
        )
    model = compact_detector(model_id="compact-cifake-v1-random")
    return BenchModel(
        "compact-cifake-v1-random",
        model,
        {
            "checkpoint": None,
            "shipped": False,
            "note": f"{folder} does not exist yet: a randomly initialised compact detector "
            "with the shipped configuration (widths 32,64,128, blocks 2,2,2, input 32) "
            "was measured instead; timings carry over, agreement on random weights does not",
        },
    )


def vit_b16() -> BenchModel:
    from bench.gradcam_timing import VIT_B16, vit_b16_detector

    return BenchModel(
        "clip-vit-b16-random",
        vit_b16_detector(),
        {"config": VIT_B16, "weights": "random (timing does not depend on them)"},
    )


def tiny() -> BenchModel:
    return BenchModel("bench-tiny-compact", tiny_detector(), {"note": "smoke-test size"})


# ---------------------------------------------------------------------------- images
def synthetic_image(seed: int, size: tuple[int, int] = (256, 256)) -> Image.Image:
    """A smooth random picture with grain: structure at several scales, unique per seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    base = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    array = np.asarray(base, dtype=np.int16)
    noise = rng.normal(0, 12, array.shape)
    return Image.fromarray(np.clip(array + noise, 0, 255).astype(np.uint8), "RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def synthetic_pngs(count: int, size: tuple[int, int] = (256, 256), seed: int = 0) -> list[bytes]:
    return [png_bytes(synthetic_image(seed + i, size)) for i in range(count)]


def folder_images(folder: Path, count: int) -> list[bytes]:
    """Up to ``count`` files spread evenly over a folder (e.g. REAL/ and FAKE/)."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no images under {folder}")
    step = max(1, len(paths) // count)
    return [p.read_bytes() for p in paths[::step][:count]]


def bench_images(
    count: int, folder: Path | None = None, size: tuple[int, int] = (256, 256)
) -> tuple[list[bytes], dict[str, Any]]:
    """Encoded images and a description of them (the service decodes what it receives)."""
    if folder is not None:
        data = folder_images(folder, count)
        return data, {"source": str(folder), "count": len(data)}
    data = synthetic_pngs(count, size)
    return data, {"source": "synthetic PNG", "size": list(size), "count": len(data)}
