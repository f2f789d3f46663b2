"""Explanation commands: robustness metrics.

The Grad-CAM benchmark is ``python -m bench gradcam`` (``bench/``, not installed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from services.cli.output import console, emit, fail


def robustness(
    data: Annotated[Path, typer.Option("--data", help="images: a folder (REAL/FAKE or flat)")],
    model: Annotated[Path | None, typer.Option("--model")] = None,
    eps: Annotated[str, typer.Option(help="comma-separated FGSM epsilons")] = (
        "0.001,0.002,0.005,0.01"
    ),
    report: Annotated[Path, typer.Option(help="JSON report")] = Path("robustness.json"),
    max_images: int = 200,
) -> None:
    """FGSM robustness of the Grad-CAM explanations: NISSIM, MOD, VID, flip rate."""
    import torch
    from tqdm import tqdm

    from common.detector.checkpoint import load_checkpoint
    from common.detector.model import CheckpointError
    from common.detector.prepare import IMAGE_SUFFIXES
    from common.images import ImageDecodeError, decode_rgb
    from services.gradcam.cam import DetectorCAM
    from services.gradcam.robustness import image_robustness, plot, summarize, write_report

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    try:
        epsilons = [float(e) for e in eps.split(",") if e.strip()]
    except ValueError:
        fail(f"--eps must be comma-separated numbers, got {eps!r}")
        return
    if not data.is_dir():
        fail(f"{data} is not a folder")
    paths = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    paths = paths[:: max(1, len(paths) // max_images)][:max_images]
    if not paths:
        fail(f"no images under {data}")
    try:
        detector = load_checkpoint(model)
    except CheckpointError as exc:
        fail(str(exc))
        return
    results = []
    with DetectorCAM(detector) as cam:
        for path in tqdm(paths, desc="robustness", unit="img"):
            try:
                image = decode_rgb(path.read_bytes())
            except ImageDecodeError as exc:
                console.print(f"skipping {path}: {exc}")
                continue
            results.append(image_robustness(detector, cam, image, epsilons, str(path)))
    summary = summarize(results, epsilons)
    write_report(summary, report)
    plot(summary, report.with_suffix(".png"))
    emit({k: v for k, v in summary.items() if k != "images"} | {"report": str(report)})


def register(app: typer.Typer) -> None:
    app.command()(robustness)
