"""prepare → train → evaluate → quantize, on generated data."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.detector.checkpoint import load_checkpoint, read_config, save_checkpoint
from common.detector.evaluation import REPORT_KEYS, evaluate
from common.detector.metrics import classification_metrics
from common.detector.model import Detector
from common.detector.prepare import PrepareError, UnsafeArchiveError, prepare
from common.detector.training import TrainOptions, train
from tests.helpers import image_bytes
from tests.unit.conftest import tiny_clip_config, tiny_compact_config, write_dataset


# ------------------------------------------------------------------------------ prepare
def _add(tar: tarfile.TarFile, name: str, data: bytes, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def _archive(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            _add(tar, name, data)
    return path


def test_prepare_flattens_nested_archives(tmp_path: Path) -> None:
    inner = _archive(
        tmp_path / "inner.tar.gz",
        [
            ("batch7/img_a.png", image_bytes(seed=1)),
            ("batch7/img_b.png", image_bytes(seed=2)),
        ],
    )
    src = tmp_path / "src" / "deep" / "er"
    src.mkdir(parents=True)
    _archive(
        src / "data.tar.gz",
        [
            ("set/REAL/x/1.png", image_bytes(seed=3)),
            ("set/REAL/2.jpg", image_bytes(seed=4, fmt="JPEG")),
            ("set/REAL/dup.png", image_bytes(seed=3)),  # byte-identical duplicate
            ("set/FAKE/more.tar.gz", inner.read_bytes()),
            ("set/readme.txt", b"hello"),
        ],
    )
    dest = tmp_path / "out"
    report = prepare(tmp_path / "src", dest)
    assert report.total("REAL") == 3 and report.written["REAL"] == 2
    assert report.total("FAKE") == 2
    assert report.skipped_non_image == 1
    assert len(list((dest / "REAL").iterdir())) == 2
    assert len(list((dest / "FAKE").iterdir())) == 2

    again = prepare(tmp_path / "src", dest)  # idempotent
    assert sum(again.written.values()) == 0 and again.total("FAKE") == 2


@pytest.mark.parametrize(
    ("member", "attrs", "match"),
    [
        ("../../escape/REAL/a.png", {}, r"\.\."),
        ("/etc/REAL/a.png", {}, "absolute"),
        ("REAL/link.png", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "link"),
        ("REAL/hard.png", {"type": tarfile.LNKTYPE, "linkname": "REAL/ok.png"}, "link"),
        ("REAL/dev", {"type": tarfile.CHRTYPE}, "device"),
        ("REAL/fifo", {"type": tarfile.FIFOTYPE}, "FIFO"),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "device", "fifo"],
)
def test_prepare_rejects_hostile_archives(
    tmp_path: Path, member: str, attrs: dict, match: str
) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "REAL/ok.png", image_bytes())
        payload = b"" if attrs else image_bytes()
        _add(tar, member, payload, **attrs)
    with pytest.raises(UnsafeArchiveError, match=match):
        prepare(archive, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.png")), "nothing written from a hostile archive"
    assert not (tmp_path.parent / "escape").exists()


def test_prepare_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match=r"no \.tar\.gz"):
        prepare(tmp_path, tmp_path / "out")
    unlabeled = _archive(tmp_path / "x.tar.gz", [("cats/1.png", image_bytes())])
    with pytest.raises(PrepareError, match=r"REAL or FAKE"):
        prepare(unlabeled, tmp_path / "out")
    (tmp_path / "bad.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(PrepareError, match=r"not a readable|truncated|corrupt"):
        prepare(tmp_path / "bad.tar.gz", tmp_path / "out2")


# ------------------------------------------------------------------------------ training
def test_training_learns_a_separable_task(separable_data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = train(
        TrainOptions(
            data=separable_data,
            out=tmp_path / "ckpt",
            widths=(8, 16),
            blocks=(1, 1),
            epochs=6,
            batch_size=16,
            lr=3e-3,
            patience=10,
            show_progress=False,
            model_id="separable",
        )
    )
    assert result.best_val_accuracy >= 0.95
    config = read_config(tmp_path / "ckpt")
    assert config.metrics["accuracy"] >= 0.95
    assert config.data["train"]["n"] == 96 and config.data["validation"]["n"] == 24
    assert config.data["validation"]["per_class"] == {"REAL": 12, "FAKE": 12}
    assert config.calibration.temperature > 0
    history = json.loads((tmp_path / "ckpt" / "history.json").read_text())
    assert len(history) == result.epochs_run
    assert (tmp_path / "ckpt" / "training_curve.png").stat().st_size > 0


def test_training_resumes(separable_data: Path, tmp_path: Path) -> None:
    options = TrainOptions(
        data=separable_data,
        out=tmp_path / "ckpt",
        widths=(8, 16),
        blocks=(1, 1),
        epochs=2,
        batch_size=16,
        lr=3e-3,
        patience=10,
        show_progress=False,
    )
    train(options)
    options.epochs, options.resume = 3, True
    result = train(options)
    history = json.loads((tmp_path / "ckpt" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3] and result.epochs_run == 3


def test_clip_probe_caches_features(separable_data: Path, tmp_path: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from tests.unit.conftest import TINY_CLIP

    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).save_pretrained(tmp_path / "clip")
    options = TrainOptions(
        data=separable_data,
        out=tmp_path / "probe",
        backbone="clip-vit",
        pretrained=str(tmp_path / "clip"),
        probe=True,
        epochs=3,
        batch_size=16,
        lr=1e-2,
        show_progress=False,
    )
    train(options)
    cached = sorted((tmp_path / "probe" / "feature-cache").glob("*.pt"))
    assert len(cached) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    train(options)  # second run reuses the cache
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    model = load_checkpoint(tmp_path / "probe")
    assert model.config.backbone.frozen and not model.config.backbone.weights_in_checkpoint


def test_clip_full_finetune_runs(separable_data: Path, tmp_path: Path) -> None:
    options = TrainOptions(
        data=separable_data,
        out=tmp_path / "ft",
        backbone="clip-vit",
        vision_config=dict(tiny_clip_config().backbone.vision_config or {}),
        epochs=1,
        batch_size=16,
        lr=1e-3,
        show_progress=False,
        max_samples=48,
    )
    train(options)
    assert load_checkpoint(tmp_path / "ft").config.backbone.weights_in_checkpoint


# ------------------------------------------------------------------------------ evaluation
def test_evaluate_report_on_a_known_case(tmp_path: Path) -> None:
    """A model that always says FAKE with p≈1: every metric is known in advance."""
    data = write_dataset(tmp_path / "data", n_per_class=3)
    for extra in list((data / "FAKE").iterdir())[2:]:
        extra.unlink()  # 3 REAL, 2 FAKE
    model = Detector(tiny_compact_config()).eval()
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.copy_(torch.tensor([0.0, 20.0]))
    save_checkpoint(model, tmp_path / "always-fake")
    result = evaluate(tmp_path / "always-fake", data, tmp_path / "plots", show_progress=False)
    report = result.report
    assert tuple(report) == REPORT_KEYS
    assert report["n"] == 5
    assert report["accuracy"] == pytest.approx(0.4)
    assert report["precision"] == pytest.approx(0.4)
    assert report["recall"] == pytest.approx(1.0)
    assert report["f1"] == pytest.approx(2 * 0.4 / 1.4)
    assert report["roc_auc"] == pytest.approx(0.5)
    assert report["ece"] == pytest.approx(0.6, abs=1e-3)
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert report["size_bytes"] > 0 and report["latency_ms_per_image"] > 0
    assert result.confusion_matrix == [[0, 3], [0, 2]]
    assert (tmp_path / "plots" / "roc.png").is_file()
    assert (tmp_path / "plots" / "confusion_matrix.png").is_file()


def test_metrics_of_a_perfect_ranking() -> None:
    metrics = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.6, 0.9]))
    assert metrics["accuracy"] == 1.0 and metrics["roc_auc"] == 1.0 and metrics["f1"] == 1.0


# ------------------------------------------------------------------------------ quantisation
@pytest.mark.parametrize(
    "config_factory", [tiny_clip_config, tiny_compact_config], ids=["clip", "compact"]
)
def test_quantized_model_agrees_with_fp32(tmp_path: Path, config_factory) -> None:  # type: ignore[no-untyped-def]
    from common.detector.quantize import quantize_checkpoint

    torch.manual_seed(0)
    model = Detector(config_factory()).eval()
    save_checkpoint(model, tmp_path / "fp32")
    quantize_checkpoint(tmp_path / "fp32", tmp_path / "int8")
    quantized = load_checkpoint(tmp_path / "int8")
    assert quantized.config.quantization is not None
    assert quantized.config.model_id.endswith("-int8")
    batch = torch.randn(200, 3, 32, 32)
    with torch.inference_mode():
        reference = model(batch).argmax(1)
        candidate = quantized(batch).argmax(1)
    agreement = float((reference == candidate).float().mean())
    assert agreement >= 0.9, agreement
    if config_factory is tiny_clip_config:
        fp32 = (tmp_path / "fp32" / "model.safetensors").stat().st_size
        int8 = (tmp_path / "int8" / "model.safetensors").stat().st_size
        assert int8 < fp32


# ------------------------------------------------------------------------------ bad images
@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"GIF89a", "cannot"),
        (b"just some text", "not an image"),
        (image_bytes(fmt="PNG")[:100], "truncated"),
        (image_bytes(fmt="JPEG")[:200], "truncated"),
    ],
    ids=["zero-byte", "gif-header-only", "text", "truncated-png", "truncated-jpeg"],
)
def test_bad_images_give_a_clear_error(tmp_path: Path, data: bytes, fragment: str) -> None:
    from typer.testing import CliRunner

    from common.images import ImageDecodeError, decode_rgb
    from services.cli.main import app

    with pytest.raises(ImageDecodeError, match=fragment):
        decode_rgb(data)
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    result = CliRunner().invoke(app, ["analyze", str(path)])
    assert result.exit_code == 2
    assert "error" in result.output and "Traceback" not in result.output


def test_odd_modes_decode_to_rgb() -> None:
    from common.images import decode_rgb

    for mode in ("CMYK", "L", "P", "RGBA", "I;16", "LA"):
        buffer = io.BytesIO()
        fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
        Image.new(mode, (9, 7)).save(buffer, format=fmt)
        image = decode_rgb(buffer.getvalue())
        assert image.mode == "RGB" and image.size == (9, 7), mode
