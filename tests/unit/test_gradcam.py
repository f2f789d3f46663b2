"""Grad-CAM, ROIs, evidence, metadata and robustness metrics on tiny models."""

from __future__ import annotations

import gc
import io
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from common.detector.checkpoint import load_checkpoint
from common.detector.inference import DetectorEngine
from common.detector.model import Detector
from services.gradcam.analysis import analyze_image
from services.gradcam.cam import DetectorCAM
from services.gradcam.metadata import ABSENCE_NOTE, inspect_metadata
from services.gradcam.robustness import fgsm, mod_vid, nissim, ssim
from services.gradcam.rois import extract_regions, position_in_words
from tests.unit.conftest import smooth_image, tiny_clip_config, tiny_compact_config

ROI_SCHEMA = json.loads((Path(__file__).parent / "roi_schema.json").read_text())


@pytest.mark.parametrize(
    "factory", [tiny_compact_config, tiny_clip_config], ids=["compact", "clip"]
)
def test_heatmap_shape_and_range(factory) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = Detector(factory()).eval()
    with DetectorCAM(model) as cam:
        maps, logits = cam(torch.randn(3, 3, 32, 32))
    assert maps.shape == (3, 32, 32) and logits.shape == (3, 2)
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.isfinite(maps).all()


@pytest.mark.parametrize(
    "factory", [tiny_compact_config, tiny_clip_config], ids=["compact", "clip"]
)
def test_truncated_backward_gives_the_full_backward_heatmap(factory) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = Detector(factory()).eval()
    batch = torch.randn(4, 3, 32, 32)
    with DetectorCAM(model, truncated=False) as full:
        reference, _ = full(batch, [0, 1, 1, 0])
    with DetectorCAM(model, truncated=True) as fast:
        candidate, _ = fast(batch, [0, 1, 1, 0])
    assert np.abs(reference - candidate).max() < 1e-5
    assert all(p.requires_grad for p in model.parameters()), "flags restored on release"


def test_truncated_cam_skips_resetting_gradients_no_weight_holds(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """pytorch-grad-cam calls ``model.zero_grad()`` per heatmap, a walk over every
    parameter; with frozen weights there is nothing to reset (the full CAM still does)."""
    torch.manual_seed(0)
    model = Detector(tiny_compact_config()).eval()
    resets: list[str] = []
    monkeypatch.setattr(model, "zero_grad", lambda *_, **__: resets.append("reset"))
    batch = torch.randn(2, 3, 32, 32)
    with DetectorCAM(model) as cam:
        cam(batch)
    assert resets == []
    assert all(p.grad is None for p in model.parameters())
    with DetectorCAM(model, truncated=False) as full:
        full(batch)
    assert resets == ["reset"]


def test_cam_releases_hooks_and_memory_stays_flat() -> None:
    import psutil

    torch.manual_seed(0)
    model = Detector(tiny_compact_config()).eval()
    layer = model.gradcam_layer
    before_hooks = len(layer._forward_hooks)
    batch = torch.randn(8, 3, 32, 32)
    process = psutil.Process()
    with DetectorCAM(model) as cam:
        for _ in range(20):
            cam(batch)
        gc.collect()
        baseline = process.memory_info().rss
        for _ in range(300):
            cam(batch)
        gc.collect()
        grown = process.memory_info().rss - baseline
        assert len(cam.cam.activations_and_grads.activations) == 0
    assert grown < 20 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB over 300 calls"
    assert len(layer._forward_hooks) == before_hooks


def test_regions_rank_by_heat_share_and_name_positions() -> None:
    heat = np.zeros((30, 30), dtype=np.float32)
    heat[2:8, 2:8] = 1.0  # strong, upper left
    heat[20:28, 20:28] = 0.5  # larger but cooler, lower right: less heat in total
    regions = extract_regions(heat, threshold=0.5, top_k=5)
    assert [r.position for r in regions] == ["upper left", "lower right"]
    assert regions[0].heat_share == pytest.approx(36 / (36 + 64 * 0.5))
    assert (regions[0].x0, regions[0].y0, regions[0].x1, regions[0].y1) == (2, 2, 8, 8)
    assert extract_regions(np.zeros((5, 5))) == []
    assert position_in_words(0.5, 0.5) == "centre"
    assert position_in_words(0.9, 0.1) == "upper right"
    assert position_in_words(0.5, 0.9) == "lower centre"


def test_planted_evidence_is_found_in_its_quadrant(trained_quadrant_model: Path) -> None:
    """A model trained to spot a texture in the upper-left quadrant looks there."""
    from tests.unit.conftest import plant_texture

    engine = DetectorEngine(load_checkpoint(trained_quadrant_model))
    rng = np.random.default_rng(123)
    hits = 0
    trials = 10
    with DetectorCAM(engine.model) as cam:
        for _ in range(trials):
            image = Image.fromarray(plant_texture(smooth_image(rng), rng, (2, 2, 14, 14)))
            analysis = analyze_image(engine, image, b"", cam)
            if analysis.prediction.label_name != "FAKE":
                continue
            top = analysis.document["rois"][0]
            x0, y0, x1, y1 = top["box_normalized"]
            centre = ((x0 + x1) / 2, (y0 + y1) / 2)
            hits += centre[0] < 0.5 and centre[1] < 0.5
    assert hits >= 8, f"top ROI in the upper-left quadrant for {hits}/{trials} images"


def test_roi_document_matches_its_schema(tiny_checkpoint: Path) -> None:
    engine = DetectorEngine(load_checkpoint(tiny_checkpoint))
    rng = np.random.default_rng(0)
    image = Image.fromarray(smooth_image(rng, 64))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    analysis = analyze_image(engine, image, buffer.getvalue())
    jsonschema.validate(analysis.document, ROI_SCHEMA)
    assert analysis.heatmap.shape == (64, 64)
    assert Image.open(io.BytesIO(analysis.overlay_png)).size == (64, 64)
    assert Image.open(io.BytesIO(analysis.heatmap_png)).size == (64, 64)
    assert analysis.document["metadata"]["note"] == ABSENCE_NOTE


def test_large_images_are_analysed_downscaled_with_boxes_in_original_pixels(
    tiny_checkpoint: Path,
) -> None:
    engine = DetectorEngine(load_checkpoint(tiny_checkpoint))
    image = Image.fromarray(smooth_image(np.random.default_rng(1), 32)).resize((2048, 1536))
    analysis = analyze_image(engine, image, b"")
    assert analysis.document["image"]["analysis_size"] == [1024, 768]
    for roi in analysis.document["rois"]:
        x0, y0, x1, y1 = roi["box"]
        assert 0 <= x0 < x1 <= 2048 and 0 <= y0 < y1 <= 1536


def test_generator_metadata_is_found() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat, Steps: 20, Sampler: Euler a, Model: sd-v1-4")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    found = inspect_metadata(buffer.getvalue())
    assert found["ai_indicated"] is True
    assert found["generator_traces"][0]["source"] == "png:parameters"
    assert found["note"] is None

    exif = Image.Exif()
    exif[0x0131] = "Adobe Firefly"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif)
    found = inspect_metadata(buffer.getvalue())
    assert found["generator_traces"] == [{"source": "exif:Software", "value": "Adobe Firefly"}]
    assert found["c2pa"]["checked"] is True and found["c2pa"]["present"] is False


def test_ssim_nissim_mod_vid_of_identical_maps() -> None:
    rng = np.random.default_rng(0)
    heat = rng.uniform(0, 1, (32, 32))
    assert ssim(heat, heat) == pytest.approx(1.0)
    assert nissim(heat, heat) == pytest.approx(0.0, abs=1e-9)
    assert mod_vid([nissim(heat, heat)] * 4) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert nissim(heat, 1 - heat) > 0.3
    assert mod_vid([0.1, 0.3]) == pytest.approx((0.2, 0.1))


def test_fgsm_with_zero_epsilon_leaves_the_image_unchanged() -> None:
    torch.manual_seed(0)
    model = Detector(tiny_compact_config()).eval()
    batch = torch.randn(2, 3, 32, 32).clamp(-1, 1)
    target = torch.tensor([0, 1])
    assert torch.equal(fgsm(model, batch, 0.0, target), batch)
    moved = fgsm(model, batch, 0.01, target)
    step = (moved - batch).abs().max().item()
    assert 0 < step <= 0.01 / 0.5 + 1e-6  # eps in pixel units, std 0.5 normalisation
