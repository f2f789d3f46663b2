"""Content-balanced sampling (common/detector/content_balance.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.detector.content_balance import (
    WEIGHT_CLIP,
    effective_size,
    propensity_weights,
    reweighted,
)


def content_split_features(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half of each class shows content only its class shows; the other half is shared."""
    rng = np.random.default_rng(seed)
    n = 80
    labels = np.repeat([0, 1], n)
    shared = np.tile(np.arange(n) % 2 == 0, 2)
    content = np.where(shared, 0.0, np.where(labels == 0, 3.0, -3.0))
    features = np.column_stack([content, rng.normal(size=(2 * n, 4))])
    features[:, 0] += rng.normal(scale=0.3, size=2 * n)
    return features, labels, shared


def test_images_whose_content_gives_their_class_away_weigh_less() -> None:
    features, labels, shared = content_split_features()
    weights = propensity_weights(features, labels)
    for label in (0, 1):
        mine = labels == label
        assert weights[mine & shared].mean() > 2 * weights[mine & ~shared].mean()
    assert weights.min() >= WEIGHT_CLIP[0] - 1e-9 and weights.max() <= WEIGHT_CLIP[1] + 1e-9


def test_power_softens_and_zero_turns_it_off() -> None:
    features, labels, _ = content_split_features()
    full = propensity_weights(features, labels, power=1.0)
    half = propensity_weights(features, labels, power=0.5)
    assert np.allclose(half, np.sqrt(full))
    assert np.array_equal(propensity_weights(features, labels, power=0.0), np.ones(len(labels)))


def test_reweighting_keeps_the_classes_equal() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    combined = reweighted(np.full(5, 0.2), np.array([1.0, 0.1, 0.1, 2.0, 0.5]), labels)
    assert np.isclose(combined[labels == 0].sum(), 0.5)
    assert np.isclose(combined[labels == 1].sum(), 0.5)
    assert np.isclose(combined[0] / combined[1], 10.0)
    assert np.isclose(effective_size(np.ones(7)), 7.0)


def test_training_samples_are_content_balanced_on_request(tmp_path: Path) -> None:
    from common.detector.crop_training import (
        CropTrainOptions,
        build_wild_config,
        decode_native,
        sampling_weights,
    )
    from common.detector.model import Detector
    from common.detector.wild_data import balanced_weights, read_manifest
    from tests.unit.test_native_detector import write_wild

    wild = write_wild(tmp_path / "wild", per_class=10)
    samples = read_manifest(wild)
    images = [decode_native(s.path) for s in samples]
    options = CropTrainOptions(wild=wild, out=tmp_path / "run", crop=64, tiny=True)
    torch.manual_seed(0)
    model = Detector(build_wild_config(options))
    off = sampling_weights(model, samples, images, options)
    assert np.allclose(off, balanced_weights(samples))
    options.content_balance = 1.0
    on = sampling_weights(model, samples, images, options)
    labels = np.array([s.label for s in samples])
    assert on.shape == off.shape and np.isclose(on.sum(), 1.0)
    assert np.isclose(on[labels == 1].sum(), 0.5)
    assert not np.allclose(on, off)


def test_content_probe_scores_every_held_out_group_it_has(tmp_path: Path) -> None:
    from common.detector.config import EfficientNetBackboneConfig, Preprocessing
    from common.detector.content_baseline import content_probe_scores, content_table
    from common.detector.efficientnet import EfficientNetLiteBackbone
    from common.detector.generalisation import to_markdown
    from tests.unit.test_native_detector import write_wild

    wild = write_wild(tmp_path / "wild", per_class=10)
    torch.manual_seed(0)
    tiny = EfficientNetLiteBackbone(
        EfficientNetBackboneConfig(variant="lite0", channel_multiplier=0.25, depth_multiplier=0.25)
    )
    pre = Preprocessing(input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3, resize="native-crops")
    scores = content_probe_scores(wild, val_fraction=0.34, backbone=(tiny, pre))
    table = content_table(scores)
    fold = scores["dall-e"]
    assert len(fold.paths) == len(fold.labels) == len(fold.probe) and fold.labels.sum() > 0
    scored = {g for g, row in table["groups"].items() if row.get("roc_auc") is not None}
    assert scored == {"dall-e", "gan-faces", "modern-2024-25"}  # the groups write_wild has
    assert "no images" in table["groups"]["midjourney-2022"]["status"]
    assert 0.0 <= table["mean_roc_auc"] <= 1.0
    markdown = to_markdown({"model_id": "m", "content_baseline": table})
    assert "## Content-only baseline on the same folds" in markdown
    assert "| midjourney-2022 | — | — |" in markdown


def test_content_matched_auc_counts_pairs_of_similar_content_only() -> None:
    from common.detector.content_baseline import content_matched_auc

    # Content separates the classes (probe), and a detector that follows it wins the
    # plain ROC-AUC but not the matched one; inside each stratum it ranks by chance.
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    probe = np.array([0.1, 0.1, 0.4, 0.4, 0.6, 0.6, 0.9, 0.9])
    follows_content = probe.copy()
    assert content_matched_auc(labels, follows_content, probe, strata=4) == 0.5
    # A detector that ranks every fake above the photo beside it.
    trace = np.array([0.0, 0.0, 0.2, 0.3, 0.2, 0.3, 0.0, 0.0])
    assert content_matched_auc(labels, trace, probe, strata=4) == 1.0
    assert content_matched_auc(np.array([0, 0]), np.array([0.1, 0.2]), np.array([0.1, 0.2])) is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train-wild", "W", "--content-balance", "2"], "--content-balance"),
        (["train-wild", "W", "--rescale", "2,1"], "--rescale"),
        (["train-wild", "W", "--rescale", "big"], "--rescale"),
        (["generalisation", "--content-baseline"], "--wild-train"),
        (["generalisation", "--loso-shift", "web_pipeline"], "--loso-runs"),
        (["generalisation", "--loso-shift", "sepia"], "web_pipeline"),
    ],
)
def test_wild_options_out_of_range_get_a_clear_error(args: list[str], fragment: str) -> None:
    from typer.testing import CliRunner

    from services.cli.main import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
