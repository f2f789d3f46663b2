"""`aigi fit-ood`: make a checkpoint say `uncertain` about what it does not know."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from services.cli.output import emit, fail


def register(app: typer.Typer) -> None:
    app.command(name="fit-ood")(fit_ood)
    app.command(name="trust-check")(trust_check)


def fit_ood(
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="training data folder(s): REAL/FAKE (aigi train) or wild-train (manifest.csv)",
        ),
    ],
    model: Annotated[
        Path | None, typer.Option("--model", help="checkpoint folder (default: shipped detector)")
    ] = None,
    band: Annotated[
        float, typer.Option(help="uncertain when |p(FAKE) - threshold| is below this")
    ] = 0.1,
    pass_rate: Annotated[
        float, typer.Option(help="share of in-distribution validation images that pass")
    ] = 0.95,
    fit_limit: Annotated[int, typer.Option(help="training images to fit the statistics")] = 1500,
    val_limit: Annotated[
        int, typer.Option(help="validation images (threshold, temperature)")
    ] = 1000,
    method: Annotated[
        str | None,
        typer.Option(help="force a candidate, e.g. early:knn/mean-feature (default: measured)"),
    ] = None,
    thumbnail_data: Annotated[
        list[Path] | None,
        typer.Option(
            "--thumbnail-data",
            help="thumbnail detectors: labelled large images the model never trained on "
            "(REAL/FAKE or wild-train) to fit the temperature of downscaled images; "
            "never wild-dev",
        ),
    ] = None,
    thumbnail_limit: Annotated[
        int, typer.Option(help="images from --thumbnail-data to fit on (half as many held out)")
    ] = 1000,
) -> None:
    """OOD statistics, shift-aware temperature and uncertain band, written into the checkpoint."""
    from common.detector.checkpoint import default_checkpoint
    from common.detector.dataset import DatasetError
    from common.detector.model import CheckpointError
    from common.detector.ood_fit import fit_ood as run_fit
    from services.cli.model_commands import _threads

    logging.getLogger("common.detector").setLevel(logging.INFO)
    _threads()
    if not 0.5 <= pass_rate < 1.0:
        fail("--pass-rate must lie in [0.5, 1)")
    try:
        result = run_fit(
            model or default_checkpoint(),
            data,
            band=band,
            pass_rate=pass_rate,
            fit_limit=fit_limit,
            val_limit=val_limit,
            method=method,
            thumbnail_data=thumbnail_data or (),
            thumbnail_limit=thumbnail_limit,
        )
    except (CheckpointError, DatasetError, ValueError) as exc:
        fail(str(exc))
        return
    emit(result)


def trust_check(
    model: Annotated[
        Path | None, typer.Option("--model", help="checkpoint folder (default: shipped detector)")
    ] = None,
    wild_dev: Annotated[Path | None, typer.Option(help="wild-dev folder (REAL/, FAKE/)")] = None,
    cifake: Annotated[
        Path | None, typer.Option(help="CIFAKE folder (its validation split)")
    ] = None,
    cifake_limit: int = 1500,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    plots: Annotated[
        Path | None, typer.Option(help="folder for risk_coverage_wild_dev.png")
    ] = None,
) -> None:
    """The [trust] targets: coverage, confidently wrong, ECE, synthetic images uncertain."""
    import json

    from common.detector.checkpoint import default_checkpoint
    from common.detector.dataset import DatasetError
    from common.detector.model import CheckpointError
    from common.detector.trust_check import trust_check as run_check
    from services.cli.model_commands import _threads

    _threads()
    try:
        result = run_check(
            model or default_checkpoint(), wild_dev, cifake, cifake_limit, plots=plots
        )
    except (CheckpointError, DatasetError) as exc:
        fail(str(exc))
        return
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2) + "\n")
    emit(result)
