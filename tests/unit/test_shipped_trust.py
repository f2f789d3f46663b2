"""The OOD statistics committed beside the weights: fitted on these very weights, and
they set noise, solid colours and text screenshots aside (seed unseen by fit-ood)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.detector.checkpoint import load_checkpoint, read_config
from common.detector.config import UNCERTAIN, WEIGHTS_DIR
from common.detector.inference import DetectorEngine
from common.detector.synthetic import synthetic_ood

FITTED = sorted(
    folder
    for folder in WEIGHTS_DIR.iterdir()
    if (folder / "config.json").is_file() and read_config(folder).ood is not None
)


@pytest.mark.parametrize("folder", FITTED, ids=lambda folder: folder.name)
def test_committed_statistics_load_and_set_synthetic_images_aside(folder: Path) -> None:
    engine = DetectorEngine(load_checkpoint(folder))
    assert engine.ood is not None, "statistics of other weights: run aigi fit-ood again"
    images = synthetic_ood(6, seed=99)
    predictions = engine.predict([image for _, image in images])
    assert np.mean([p.tier == UNCERTAIN for p in predictions]) >= 0.9
