"""Where a detector fails: accuracy on its validation split under common transformations.

    python scripts/stress_detector.py DATA --model CKPT [--max-images 4000] [--out out.json]

DATA is the folder the checkpoint was trained on (REAL/ and FAKE/); the validation split
is rebuilt from the checkpoint's own split settings (same seed and fraction), so no
training image is scored. Each transformation is applied to the image before the
detector's own preprocessing, as a platform's pipeline would.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from common.detector.checkpoint import load_checkpoint
from common.detector.dataset import scan, stratified_split
from common.detector.generalisation import jpeg_recompress
from common.detector.inference import DetectorEngine
from common.images import decode_rgb


def _upscale(factor: int) -> Callable[[Image.Image], Image.Image]:
    return lambda image: image.resize(
        (image.width * factor, image.height * factor), Image.Resampling.BICUBIC
    )


def _crop_resize(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((w // 8, h // 8, w - w // 8, h - h // 8)).resize(
        (w, h), Image.Resampling.BICUBIC
    )


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda image: image,
    "jpeg_q90": jpeg_recompress(90),
    "jpeg_q75": jpeg_recompress(75),
    "jpeg_q50": jpeg_recompress(50),
    "blur_r1": lambda image: image.filter(ImageFilter.GaussianBlur(1.0)),
    "upscale_x4_bicubic": _upscale(4),
    "upscale_x8_bicubic": _upscale(8),
    "crop_75pct_resize": _crop_resize,
    "grayscale": lambda image: image.convert("L").convert("RGB"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--max-images", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_checkpoint(args.model)
    split = model.config.data.get("split", {})
    _, val = stratified_split(scan(args.data), split.get("val_fraction", 0.2), split.get("seed", 0))
    rng = np.random.default_rng(0)
    chosen = [val[i] for i in sorted(rng.permutation(len(val))[: args.max_images])]
    images = [decode_rgb(s.path.read_bytes()) for s in chosen]
    labels = np.array([s.label for s in chosen])
    engine = DetectorEngine(model, batch_size=256)
    results = {}
    for name, transform in TRANSFORMS.items():
        predictions = engine.predict([transform(image) for image in images])
        predicted = np.array([p.label for p in predictions])
        results[name] = {
            "accuracy": round(float((predicted == labels).mean()), 4),
            "real_called_fake": round(float((predicted[labels == 0] == 1).mean()), 4),
            "fake_called_real": round(float((predicted[labels == 1] == 0).mean()), 4),
        }
        print(name, results[name])
    report = {"model_id": model.config.model_id, "n": len(chosen), "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
