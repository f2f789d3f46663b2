"""The detector committed to the repository: it loads offline, and it still scores what
its report says on its own validation split (rebuilt from the training archive)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.detector.checkpoint import default_checkpoint, load_checkpoint
from common.detector.config import SHIPPED_MODEL
from tests.conftest import shared_path


def test_shipped_detector_loads_offline_and_is_small() -> None:
    model = load_checkpoint()
    assert default_checkpoint() == SHIPPED_MODEL
    assert model.config.model_id == "compact-cifake-v1"
    assert (SHIPPED_MODEL / "model.safetensors").stat().st_size < 20 * 1024 * 1024
    report = json.loads((SHIPPED_MODEL / "evaluation.json").read_text())
    assert report["n"] == model.config.data["validation"]["n"]
    assert report["accuracy"] >= 0.97 and report["roc_auc"] >= 0.99


@pytest.fixture(scope="module")
def cifake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from common.detector.prepare import prepare

    archive = shared_path("data", "cifake-train.tar.gz")
    out = tmp_path_factory.mktemp("cifake")
    prepare(archive, out)
    return out


def test_shipped_detector_on_a_sample_of_its_validation_split(cifake: Path) -> None:
    from common.detector.dataset import preload, scan, stratified_split, summarize
    from common.detector.evaluation import probabilities
    from common.detector.metrics import classification_metrics

    model = load_checkpoint()
    split = model.config.data["split"]
    _, val = stratified_split(scan(cifake), split["val_fraction"], split["seed"])
    assert summarize(val)["files_sha256"] == model.config.data["validation"]["files_sha256"]
    rng = np.random.default_rng(0)
    sample = [val[i] for i in sorted(rng.permutation(len(val))[:2000])]
    images, labels = preload(sample, model.config.preprocessing)
    metrics = classification_metrics(labels.numpy(), probabilities(model, images))
    assert metrics["accuracy"] >= 0.96, metrics  # 97.6 % on the whole split


def test_wild_detector_loads_offline_with_its_report_beside_it() -> None:
    """efficientnet-lite0-wild-v1: selectable, small, native crops, its generalisation report
    (CIFAKE val, wild-dev, every leave-one-source-out group, stress) next to the weights."""
    from common.detector.config import WEIGHTS_DIR
    from common.detector.wild_data import FAKE_GROUPS

    folder = WEIGHTS_DIR / "efficientnet-lite0-wild-v1"
    model = load_checkpoint(folder)
    config = model.config
    assert config.model_id == "efficientnet-lite0-wild-v1"
    assert config.backbone.kind == "efficientnet-lite"
    assert (config.preprocessing.resize, config.preprocessing.input_size) == ("native-crops", 128)
    assert (folder / "model.safetensors").stat().st_size <= 25 * 1024 * 1024
    report = json.loads((folder / "generalisation.json").read_text())
    assert report["model_id"] == config.model_id
    assert report["wild_dev"]["overall"]["n"] == 442
    assert set(report["wild_dev"]["per_category"]) == {"city", "interior", "nature", "people"}
    assert report["cifake_validation"]["n"] == 4000
    assert set(report["leave_one_source_out"]["groups"]) == set(FAKE_GROUPS)
    assert {"none", "jpeg_q50", "blur_sigma1", "downscale_0.5", "crop_50pct"} <= set(
        report["stress"]
    )
