"""The second temperature for images a thumbnail detector sees heavily downscaled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from common.detector.checkpoint import CONFIG_FILE, load_checkpoint, read_config
from common.detector.config import (
    THUMBNAIL_FACTOR,
    Calibration,
    CompactBackboneConfig,
    DetectorConfig,
    Preprocessing,
)
from common.detector.dataset import DatasetError
from common.detector.inference import DetectorEngine
from common.detector.ood_fit import fit_ood
from tests.unit.conftest import write_dataset


def _config(**calibration: float | None) -> DetectorConfig:
    return DetectorConfig(
        model_id="thumb",
        backbone=CompactBackboneConfig(widths=(8, 16), blocks=(1, 1)),
        calibration=Calibration(**calibration),  # type: ignore[arg-type]
    )


def test_the_temperature_follows_the_image_size() -> None:
    config = _config(temperature=2.0, thumbnail_temperature=9.0)
    edge = int(THUMBNAIL_FACTOR * config.preprocessing.input_size)
    assert config.temperature_for(32, 32) == 2.0
    assert config.temperature_for(edge - 1, 4000) == 2.0  # the shorter side decides
    assert config.temperature_for(edge, edge) == 9.0
    assert _config(temperature=2.0).temperature_for(4000, 4000) == 2.0


def test_a_thumbnail_temperature_is_refused_where_nothing_is_downscaled() -> None:
    with pytest.raises(ValidationError, match="thumbnail detectors only"):
        DetectorConfig(
            model_id="native",
            backbone=CompactBackboneConfig(widths=(8, 16), blocks=(1, 1)),
            preprocessing=Preprocessing(resize="native-crops", input_size=32, max_crops=2),
            calibration=Calibration(thumbnail_temperature=3.0),
        )
    with pytest.raises(ValidationError, match="positive"):
        Calibration(thumbnail_temperature=0.0)


def _with_thumbnail_temperature(src: Path, dst: Path, value: float) -> Path:
    shutil.copytree(src, dst)
    raw = json.loads((dst / CONFIG_FILE).read_text())
    raw["calibration"]["thumbnail_temperature"] = value
    (dst / CONFIG_FILE).write_text(json.dumps(raw))
    return dst


def test_the_engine_and_evaluate_apply_it_to_large_images_only(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from common.detector.evaluation import evaluate

    folder = _with_thumbnail_temperature(tiny_checkpoint, tmp_path / "ckpt", 1000.0)
    engine = DetectorEngine(load_checkpoint(folder))
    plain = DetectorEngine(load_checkpoint(tiny_checkpoint))
    rng = np.random.default_rng(11)
    small = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    large = small.resize((128, 128), Image.Resampling.NEAREST)
    (p_small, p_large), (q_small, q_large) = (
        [p.probability for p in e.predict([small, large])] for e in (engine, plain)
    )
    assert p_small == pytest.approx(q_small)
    assert p_large == pytest.approx(0.5, abs=1e-3) and q_large != pytest.approx(0.5, abs=1e-3)

    data = tmp_path / "data"
    for label, image in (("REAL", small), ("FAKE", large)):
        (data / label).mkdir(parents=True)
        image.save(data / label / "x.png")
    result = evaluate(folder, data, show_progress=False)
    # scan() orders FAKE before REAL or the other way; match by label.
    by_label = dict(zip(result.labels.tolist(), result.probabilities.tolist(), strict=True))
    assert by_label[0] == pytest.approx(p_small, abs=1e-5)
    assert by_label[1] == pytest.approx(p_large, abs=1e-5)


def test_fit_ood_fits_and_stores_it_with_a_held_out_check(
    tiny_checkpoint: Path, separable_data: Path, tmp_path: Path
) -> None:
    large = write_dataset(tmp_path / "large", n_per_class=40, size=96, seed=5)
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    result = fit_ood(
        folder,
        [separable_data],
        fit_limit=60,
        val_limit=30,
        synthetic_per_kind=2,
        thumbnail_data=[large],
        thumbnail_limit=60,
    )
    stored = read_config(folder).calibration
    assert stored.thumbnail_temperature == pytest.approx(result["thumbnail_temperature"])
    assert stored.temperature == pytest.approx(result["temperature"])
    info = read_config(folder).ood.fit["thumbnail"]  # type: ignore[union-attr]
    assert info["n_fit"] == 60 and info["n_held_out"] == 16
    assert set(info["held_out_after"]) == {"temperature", "nll", "ece", "wrong_in_mostly_tier"}

    again = fit_ood(folder, [separable_data], fit_limit=60, val_limit=30, synthetic_per_kind=2)
    assert again["thumbnail_temperature"] is None
    assert read_config(folder).calibration.thumbnail_temperature is None


def test_fit_ood_explains_when_the_thumbnail_data_has_no_large_images(
    tiny_checkpoint: Path, separable_data: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    with pytest.raises(DatasetError, match="64 px or more"):
        fit_ood(
            folder,
            [separable_data],
            fit_limit=60,
            val_limit=30,
            synthetic_per_kind=2,
            thumbnail_data=[separable_data],  # 32-px images: nothing is downscaled
        )
