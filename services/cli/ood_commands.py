"""`aigi fit-ood`: make a checkpoint say `uncertain` about what it does not know."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from services.cli.output import emit, fail


def register(app: typer.Typer) -> None:
    app.command(name="fit-ood")(fit_ood)


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
        )
    except (CheckpointError, DatasetError, ValueError) as exc:
        fail(str(exc))
        return
    emit(result)
