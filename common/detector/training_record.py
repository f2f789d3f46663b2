"""What a training run writes down, shared by `aigi train` and `aigi train-wild`.

Both recipes record their options in the checkpoint's config, rewrite
``history.json`` after every evaluation (so a stopped run keeps what it learned),
and end the same way: the best checkpoint's validation logits fit a temperature, and
its metrics are those of the calibrated p(FAKE).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from common.detector.calibration import fit_temperature
from common.detector.metrics import classification_metrics

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

HISTORY_FILE = "history.json"


def options_record(options: DataclassInstance, exclude: Collection[str]) -> dict[str, Any]:
    """A run's options as JSON-ready values (paths as strings), less ``exclude``."""
    return {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in asdict(options).items()
        if key not in exclude
    }


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``out/history.json`` with every evaluation so far."""
    (out / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n")


def calibrated_metrics(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[str, Any]]:
    """The temperature fitted on validation ``logits`` and the metrics of the
    calibrated p(FAKE) against ``labels``."""
    temperature = fit_temperature(logits, labels)
    probs = torch.softmax(logits / temperature, dim=1)[:, 1].numpy()
    return temperature, classification_metrics(labels.numpy(), probs)
