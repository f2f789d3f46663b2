"""Backbones, heads, checkpoints, calibration and tiers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.detector.calibration import expected_calibration_error, fit_temperature
from common.detector.checkpoint import load_checkpoint, read_config, save_checkpoint
from common.detector.config import Calibration, DetectorConfig, tier_for
from common.detector.inference import DetectorEngine
from common.detector.model import CheckpointError, Detector
from tests.unit.conftest import TINY_CLIP, tiny_clip_config, tiny_compact_config


@pytest.mark.parametrize("backbone", ["compact", "clip-vit"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_backbones_and_heads_round_trip(tmp_path: Path, backbone: str, head: str) -> None:
    config = tiny_compact_config(head) if backbone == "compact" else tiny_clip_config(head)
    torch.manual_seed(0)
    model = Detector(config).eval()
    batch = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits = model(batch)
    assert logits.shape == (3, 2)
    save_checkpoint(model, tmp_path / "ckpt")
    restored = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.allclose(restored(batch), logits, atol=1e-6)
    assert restored.config == config


def test_linear_head_is_wx_plus_b() -> None:
    model = Detector(tiny_compact_config("linear")).eval()
    features = torch.randn(4, model.backbone.out_features)
    weight, bias = model.head.fc.weight, model.head.fc.bias
    assert torch.allclose(model.head(features), features @ weight.T + bias)


def test_clip_loads_from_a_local_folder(tmp_path: Path) -> None:
    """A pretrained backbone referenced by path; the checkpoint stores only the head."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from common.detector.config import ClipBackboneConfig

    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).save_pretrained(tmp_path / "clip")
    config = tiny_clip_config().model_copy(
        update={
            "backbone": ClipBackboneConfig(
                pretrained=str(tmp_path / "clip"), weights_in_checkpoint=False, frozen=True
            )
        }
    )
    model = Detector(config).eval()
    save_checkpoint(model, tmp_path / "ckpt")
    from safetensors.torch import load_file

    assert all(k.startswith("head.") for k in load_file(tmp_path / "ckpt" / "model.safetensors"))
    restored = load_checkpoint(tmp_path / "ckpt")
    batch = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(restored(batch), model(batch), atol=1e-6)


def test_missing_pretrained_folder_is_a_clear_error(tmp_path: Path) -> None:
    from common.detector.config import ClipBackboneConfig

    config = tiny_clip_config().model_copy(
        update={
            "backbone": ClipBackboneConfig(
                pretrained=str(tmp_path / "absent"), weights_in_checkpoint=False
            )
        }
    )
    with pytest.raises(CheckpointError, match="local folder"):
        Detector(config)


def test_refuses_missing_or_inconsistent_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a folder"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_checkpoint(tmp_path / "empty")

    save_checkpoint(Detector(tiny_compact_config()), tmp_path / "ok")
    config_path = tmp_path / "ok" / "config.json"
    raw = json.loads(config_path.read_text())

    broken = dict(raw, labels=["FAKE", "REAL"])
    config_path.write_text(json.dumps(broken))
    with pytest.raises(CheckpointError, match="labels"):
        load_checkpoint(tmp_path / "ok")

    broken = dict(raw, calibration={"temperature": 1.0, "tier_thresholds": [0.8, 0.5, 0.2]})
    config_path.write_text(json.dumps(broken))
    with pytest.raises(CheckpointError, match="tier_thresholds"):
        load_checkpoint(tmp_path / "ok")

    wider = dict(raw, backbone={**raw["backbone"], "widths": [16, 32]})
    config_path.write_text(json.dumps(wider))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path / "ok")

    config_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_config(tmp_path / "ok")

    config_path.write_text(json.dumps(raw))
    (tmp_path / "ok" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="unreadable or truncated"):
        load_checkpoint(tmp_path / "ok")


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logits = torch.tensor(rng.normal(0, 2, (4000, 2)))
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    overconfident = true_logits * 3.0
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.15)


def test_ece_is_zero_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 1, 20000)
    labels = (rng.uniform(0, 1, 20000) < probs).astype(int)
    assert expected_calibration_error(probs, labels) < 0.02
    wrong = np.where(probs > 0.5, 0.99, 0.01)
    assert expected_calibration_error(wrong, labels) > 0.15


@pytest.mark.parametrize(
    ("p", "tier"),
    [
        (0.0, "mostly real"),
        (0.19, "mostly real"),
        (0.2, "probably real"),
        (0.49, "probably real"),
        (0.5, "probably fake"),
        (0.79, "probably fake"),
        (0.8, "mostly fake"),
        (1.0, "mostly fake"),
    ],
)
def test_tiers(p: float, tier: str) -> None:
    assert tier_for(p, (0.2, 0.5, 0.8)) == tier


def test_engine_applies_temperature_and_configurable_thresholds() -> None:
    config = tiny_compact_config().model_copy(
        update={"calibration": Calibration(temperature=2.0, tier_thresholds=(0.1, 0.3, 0.7))}
    )
    model = Detector(config).eval()
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.copy_(torch.tensor([0.0, 1.0]))
    engine = DetectorEngine(model)
    prediction = engine.predict([Image.new("RGB", (50, 20), "white")])[0]
    expected = float(torch.softmax(torch.tensor([0.0, 1.0]) / 2.0, 0)[1])
    assert prediction.probability == pytest.approx(expected, abs=1e-6)
    assert prediction.label == 1 and prediction.label_name == "FAKE"
    assert prediction.tier == "probably fake"  # 0.62 with thresholds (0.1, 0.3, 0.7)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="format_version"):
        DetectorConfig.model_validate({**tiny_compact_config().model_dump(), "format_version": 9})
