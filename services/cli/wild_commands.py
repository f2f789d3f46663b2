"""Commands for the pretrained, native-resolution detector: train-wild, generalisation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from services.cli.model_commands import ModelOption, _threads
from services.cli.output import emit, fail

BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


def register(app: typer.Typer) -> None:
    app.command("train-wild")(train_wild)
    app.command()(generalisation)


def train_wild(
    wild: Annotated[Path, typer.Argument(help="wild-train folder (REAL/, FAKE/, manifest.csv)")],
    out: Annotated[Path, typer.Option(help="checkpoint folder to write")] = Path("runs/wild"),
    backbone: Annotated[str, typer.Option(help=" | ".join(BACKBONES))] = "efficientnet-lite0",
    cifake: Annotated[
        Path | None, typer.Option(help="CIFAKE folder (REAL/, FAKE/) mixed in at 32 px")
    ] = None,
    input_filter: Annotated[
        str, typer.Option(help="none, or npr (neighbouring-pixel residual input)")
    ] = "none",
    crop: Annotated[int, typer.Option(help="native-scale crop side in pixels")] = 128,
    max_crops: Annotated[int, typer.Option(help="crops scored per image at inference")] = 8,
    rescale: Annotated[
        str, typer.Option(help="MIN,MAX factor of the whole-image re-scale augmentation")
    ] = "0.75,1.5",
    rescale_p: Annotated[float, typer.Option(help="probability of that re-scale")] = 0.3,
    content_balance: Annotated[
        float, typer.Option(help="content-balanced sampling strength, 0 (off) to 1")
    ] = 0.0,
    steps: int = 1000,
    batch_size: int = 16,
    cifake_batch: Annotated[int, typer.Option(help="images per CIFAKE batch")] = 64,
    cifake_max: Annotated[int, typer.Option(help="CIFAKE training images loaded")] = 20000,
    init: Annotated[
        Path | None, typer.Option(help="start from this checkpoint (a further phase)")
    ] = None,
    lr: float = 3e-4,
    exclude_group: Annotated[
        list[str] | None,
        typer.Option(help="leave a generator group out (the leave-one-source-out folds)"),
    ] = None,
    seed: int = 0,
    model_id: str | None = None,
) -> None:
    """Fine-tune an ImageNet EfficientNet-Lite on native-scale crops (see the model card)."""
    from common.detector.crop_training import CropTrainOptions
    from common.detector.crop_training import train_wild as run
    from common.detector.dataset import DatasetError
    from common.detector.model import CheckpointError
    from common.detector.wild_data import FAKE_GROUPS

    logging.getLogger("common.detector").setLevel(logging.INFO)
    _threads()
    if input_filter not in ("none", "npr"):
        fail(f"--input-filter must be none or npr, not {input_filter!r}")
    if backbone not in BACKBONES:
        fail(f"--backbone must be one of {', '.join(BACKBONES)}, not {backbone!r}")
    unknown = sorted(set(exclude_group or ()) - set(FAKE_GROUPS))
    if unknown:
        fail(f"unknown group(s) {unknown}; choose from {', '.join(FAKE_GROUPS)}")
    try:
        low, high = (float(part) for part in rescale.split(","))
    except ValueError:
        low = high = -1.0
    if not 0 <= content_balance <= 1:
        fail(f"--content-balance must be between 0 and 1, not {content_balance}")
    if not 0 < low <= high or not 0 <= rescale_p <= 1:
        fail(f"--rescale must be MIN,MAX with 0 < MIN <= MAX (got {rescale!r}); --rescale-p 0..1")
    options = CropTrainOptions(
        wild=wild,
        out=out,
        cifake=cifake,
        variant=cast(Any, backbone.removeprefix("efficientnet-")),
        input_filter=cast(Any, input_filter),
        crop=crop,
        max_crops=max_crops,
        rescale_range=(low, high),
        rescale_p=rescale_p,
        content_balance=content_balance,
        steps=steps,
        batch_size=batch_size,
        cifake_batch=cifake_batch,
        cifake_max=cifake_max,
        init=init,
        lr=lr,
        exclude_groups=tuple(exclude_group or ()),
        seed=seed,
        model_id=model_id,
    )
    try:
        result = run(options)
    except (DatasetError, CheckpointError, ValueError) as exc:
        fail(str(exc))
        return
    emit(
        {
            "checkpoint": str(result.checkpoint),
            "steps": result.steps,
            "seconds": round(result.seconds, 1),
            "validation": result.val_metrics,
        }
    )


def generalisation(
    model: ModelOption = None,
    out: Annotated[
        Path | None, typer.Option(help="folder for generalisation.json/.md (default: the model's)")
    ] = None,
    cifake: Annotated[Path | None, typer.Option(help="CIFAKE training folder")] = None,
    wild_dev: Annotated[Path | None, typer.Option(help="wild-dev folder (evaluation only)")] = None,
    wild_train: Annotated[Path | None, typer.Option(help="wild-train folder")] = None,
    loso_runs: Annotated[
        Path | None, typer.Option(help="folder with one train-wild checkpoint per left-out group")
    ] = None,
    cifake_limit: int = 4000,
    loso_shift: Annotated[
        str | None,
        typer.Option(help="also score the folds with both sides shifted, e.g. web_pipeline"),
    ] = None,
    content_baseline: Annotated[
        bool, typer.Option(help="add the content-only probe's table on the same folds")
    ] = False,
) -> None:
    """The generalisation report: CIFAKE val, wild-dev, leave-one-source-out, stress."""
    from common.detector.checkpoint import default_checkpoint
    from common.detector.dataset import DatasetError
    from common.detector.generalisation import STRESS, generalisation_report
    from common.detector.model import CheckpointError

    logging.getLogger("common.detector").setLevel(logging.INFO)
    _threads()
    if loso_shift is not None and loso_shift not in STRESS:
        fail(f"--loso-shift must be one of {', '.join(STRESS)}, not {loso_shift!r}")
    if loso_shift is not None and (loso_runs is None or wild_train is None):
        fail("--loso-shift scores the folds again: give --loso-runs and --wild-train too")
    if content_baseline and wild_train is None:
        fail("--content-baseline needs --wild-train (the folds' training and test images)")
    folder = model or default_checkpoint()
    try:
        report = generalisation_report(
            folder,
            out or folder,
            cifake,
            wild_dev,
            wild_train,
            loso_runs,
            cifake_limit,
            loso_shift,
            content_baseline,
        )
    except (CheckpointError, DatasetError) as exc:
        fail(str(exc))
        return
    emit(report)
