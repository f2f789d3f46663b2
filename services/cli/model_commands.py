"""Detector commands: prepare, train, evaluate, quantize, analyze."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from services.cli.output import console, emit, fail

ModelOption = Annotated[
    Path | None, typer.Option("--model", help="checkpoint folder (default: shipped detector)")
]


def _threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))


def register(app: typer.Typer) -> None:
    app.command()(prepare)
    app.command()(train)
    app.command()(evaluate)
    app.command()(quantize)
    app.command()(analyze)


def prepare(
    src: Annotated[Path, typer.Argument(help="a .tar.gz or a folder searched for them")],
    dest: Annotated[Path, typer.Argument(help="output folder (gets REAL/ and FAKE/)")],
) -> None:
    """Extract training archives safely into DEST/REAL and DEST/FAKE."""
    from common.detector.prepare import PrepareError
    from common.detector.prepare import prepare as run_prepare

    try:
        report = run_prepare(src, dest, progress=lambda a: console.print(f"extracting {a}"))
    except PrepareError as exc:
        fail(str(exc))
        return
    emit(
        {
            "archives": report.archives,
            "REAL": report.total("REAL"),
            "FAKE": report.total("FAKE"),
            "written": report.written,
            "already_present": report.already_present,
            "skipped_non_image": report.skipped_non_image,
            "skipped_unlabelled": report.skipped_unlabelled,
        }
    )


def train(
    data: Annotated[Path, typer.Argument(help="folder with REAL/ and FAKE/ (aigi prepare)")],
    out: Annotated[Path, typer.Option(help="checkpoint folder to write")] = Path("runs/detector"),
    backbone: Annotated[
        str, typer.Option(help="compact or clip-vit (efficientnet-lite*: aigi train-wild)")
    ] = "compact",
    head: Annotated[str, typer.Option(help="linear or mlp")] = "linear",
    pretrained: Annotated[
        str | None, typer.Option(help="clip-vit weights: a Hugging Face id or a local folder")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="pinned Hub revision")] = None,
    probe: Annotated[
        bool, typer.Option(help="freeze the backbone, cache its features, train the head only")
    ] = False,
    epochs: int = 20,
    batch_size: int = 8,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    schedule: Annotated[str, typer.Option(help="constant or cosine")] = "constant",
    patience: int = 5,
    seed: int = 0,
    val_fraction: float = 0.2,
    widths: Annotated[str, typer.Option(help="compact: channels per stage")] = "32,64,128",
    blocks: Annotated[str, typer.Option(help="compact: residual blocks per stage")] = "2,2,2",
    input_size: Annotated[int | None, typer.Option(help="default: 32 compact, 224 CLIP")] = None,
    crop: Annotated[str, typer.Option(help="resized (RandomResizedCrop) or pad")] = "resized",
    jpeg: Annotated[bool, typer.Option(help="random JPEG re-compression")] = False,
    blur: Annotated[bool, typer.Option(help="random Gaussian blur")] = False,
    rescale: Annotated[bool, typer.Option(help="random down/up-scaling")] = False,
    precision: Annotated[
        str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16")
    ] = "auto",
    device: str | None = None,
    resume: Annotated[bool, typer.Option(help="continue from OUT/train_state.pt")] = False,
    model_id: str | None = None,
    max_samples: Annotated[int | None, typer.Option(help="use a subset (quick runs)")] = None,
) -> None:
    """Train a detector (stratified split, early stopping, calibrated)."""
    from common.detector.dataset import DatasetError
    from common.detector.training import TrainOptions
    from common.detector.training import train as run_train

    logging.getLogger("common.detector").setLevel(logging.INFO)
    _threads()
    if backbone.startswith("efficientnet-lite"):
        fail(
            f"--backbone {backbone} trains on native-scale crops of wild-train: "
            f"run `aigi train-wild DATA --backbone {backbone}` instead"
        )
    choices = {
        "backbone": (backbone, ("compact", "clip-vit")),
        "head": (head, ("linear", "mlp")),
        "schedule": (schedule, ("constant", "cosine")),
        "crop": (crop, ("resized", "pad")),
        "precision": (precision, ("auto", "fp32", "bf16", "fp16")),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            fail(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
    options = TrainOptions(
        data=data,
        out=out,
        backbone=cast(Any, backbone),
        head=cast(Any, head),
        pretrained=pretrained,
        revision=revision,
        probe=probe,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        schedule=cast(Any, schedule),
        patience=patience,
        seed=seed,
        val_fraction=val_fraction,
        widths=tuple(int(w) for w in widths.split(",")),
        blocks=tuple(int(b) for b in blocks.split(",")),
        input_size=input_size,
        crop=cast(Any, crop),
        jpeg=jpeg,
        blur=blur,
        rescale=rescale,
        precision=cast(Any, precision),
        device=device,
        resume=resume,
        model_id=model_id,
        max_samples=max_samples,
    )
    try:
        result = run_train(options)
    except (DatasetError, ValueError) as exc:
        fail(str(exc))
        return
    emit(
        {
            "checkpoint": str(result.checkpoint),
            "epochs_run": result.epochs_run,
            "temperature": result.temperature,
            "validation": result.metrics,
        }
    )


def evaluate(
    data: Annotated[Path, typer.Option("--data", help="folder with REAL/ and FAKE/")],
    model: ModelOption = None,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    plots: Annotated[
        Path | None, typer.Option(help="folder for roc.png and confusion_matrix.png")
    ] = None,
) -> None:
    """Accuracy, precision, recall, F1, ROC-AUC, ECE, latency, size of a checkpoint."""
    from common.detector.checkpoint import default_checkpoint
    from common.detector.dataset import DatasetError
    from common.detector.evaluation import evaluate as run_evaluate
    from common.detector.model import CheckpointError

    _threads()
    plots_dir = plots or (report.parent if report else None)
    try:
        result = run_evaluate(model or default_checkpoint(), data, plots_dir)
    except (CheckpointError, DatasetError) as exc:
        fail(str(exc))
        return
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.report, indent=2) + "\n")
    (tn, fp), (fn, tp) = result.confusion_matrix
    console.print(
        f"confusion matrix (rows true REAL/FAKE, cols predicted): [[{tn}, {fp}], [{fn}, {tp}]]"
    )
    emit(result.report)


def quantize(
    out: Annotated[Path, typer.Option("--out", help="folder for the int8 checkpoint")],
    model: ModelOption = None,
    data: Annotated[Path | None, typer.Option(help="measure accuracy change here")] = None,
    max_samples: int = 2000,
) -> None:
    """Dynamic int8 quantisation for CPU; reports size, latency and accuracy change."""
    from common.detector.checkpoint import default_checkpoint
    from common.detector.evaluation import evaluate as run_evaluate
    from common.detector.model import CheckpointError
    from common.detector.quantize import quantize_checkpoint

    _threads()
    source = model or default_checkpoint()
    try:
        quantize_checkpoint(source, out)
    except CheckpointError as exc:
        fail(str(exc))
        return
    summary: dict[str, object] = {"checkpoint": str(out)}
    if data is not None:
        before = run_evaluate(source, data, None, show_progress=False, max_samples=max_samples)
        after = run_evaluate(out, data, None, show_progress=False, max_samples=max_samples)
        summary.update(
            {
                "size_bytes": {
                    "fp32": before.report["size_bytes"],
                    "int8": after.report["size_bytes"],
                },
                "latency_ms_per_image": {
                    "fp32": before.report["latency_ms_per_image"],
                    "int8": after.report["latency_ms_per_image"],
                },
                "accuracy": {"fp32": before.report["accuracy"], "int8": after.report["accuracy"]},
                "agreement": float(
                    ((before.probabilities >= 0.5) == (after.probabilities >= 0.5)).mean()
                ),
                "n": after.report["n"],
            }
        )
    emit(summary)


def analyze(
    image: Annotated[Path, typer.Argument(help="an image file")],
    model: ModelOption = None,
    heatmap: Annotated[Path | None, typer.Option(help="write the Grad-CAM overlay PNG")] = None,
) -> None:
    """Verdict (and, with the gradcam stage, ROIs) for one image."""
    from common.detector.inference import DetectorEngine
    from common.detector.model import CheckpointError
    from common.images import ImageDecodeError, decode_rgb

    _threads()
    try:
        data = image.read_bytes()
    except OSError as exc:
        fail(f"cannot read {image}: {exc.strerror}")
        return
    try:
        picture = decode_rgb(data)
        engine = DetectorEngine.from_checkpoint(model)
    except (ImageDecodeError, CheckpointError) as exc:
        fail(f"{image}: {exc}")
        return
    prediction, ms = engine.predict_one(picture)
    result: dict[str, object] = {
        "image": str(image),
        "model_id": engine.model_id,
        **prediction.as_dict(),
        "latency_ms": round(ms, 2),
    }
    if heatmap is not None:
        from services.gradcam.analysis import analyze_image

        analysis = analyze_image(engine, picture, data)
        heatmap.parent.mkdir(parents=True, exist_ok=True)
        heatmap.write_bytes(analysis.overlay_png)
        result["rois"] = analysis.document["rois"]
        result["heatmap"] = str(heatmap)
    emit(result)
