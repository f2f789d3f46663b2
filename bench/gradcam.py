"""``gradcam``: Grad-CAM time against one forward, per model (target ≤ 1.2x).

On CPU this is :func:`bench.gradcam_timing.bench_model` unchanged. On CUDA the same
measurement runs on the GPU with bf16 autocast (falling back to fp32 if Grad-CAM
cannot run in bf16), synchronising before each clock read.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch

from bench.gradcam_timing import bench_model, interleaved_medians
from bench.models import BenchModel
from common.detector.model import Detector
from services.gradcam.cam import DetectorCAM

TARGET_RATIO = 1.2


def bench_device(
    model: Detector, device: str, dtype: torch.dtype | None, repeats: int, batch_size: int = 1
) -> dict[str, Any]:
    """Forward and Grad-CAM on ``device`` (``dtype``: autocast, None for fp32)."""
    kind = device.split(":")[0]
    model = copy.deepcopy(model).to(device).eval()
    size = model.config.preprocessing.input_size
    batch = torch.randn(batch_size, 3, size, size, device=device)
    plain = copy.deepcopy(model)  # the forward's own copy: no CAM hooks on it

    def sync() -> None:
        if kind == "cuda":
            torch.cuda.synchronize()

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=kind, dtype=dtype)

    def forward() -> None:
        with torch.inference_mode(), autocast():
            plain(batch)

    def gradcam(cam: DetectorCAM) -> None:
        with autocast():
            cam(batch)

    with DetectorCAM(model) as cam:
        medians = interleaved_medians(
            {"forward": forward, "gradcam": lambda: gradcam(cam)}, repeats, sync=sync
        )
    forward_ms, gradcam_ms = medians["forward"], medians["gradcam"]
    return {
        "forward_ms": round(forward_ms, 3),
        "gradcam_ms": round(gradcam_ms, 3),
        "ratio": round(gradcam_ms / forward_ms, 3),
        "batch_size": batch_size,
        "dtype": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
    }


def _with_target(result: dict[str, Any]) -> dict[str, Any]:
    return result | {"target_ratio": TARGET_RATIO, "meets_target": result["ratio"] <= TARGET_RATIO}


def bench_bf16(model: Detector, device: str, repeats: int) -> dict[str, Any]:
    """bf16 autocast on ``device``; fp32 (and the reason) where Grad-CAM cannot do bf16."""
    try:
        return bench_device(model, device, torch.bfloat16, repeats)
    except (TypeError, RuntimeError) as exc:  # e.g. numpy has no bfloat16
        measured = bench_device(model, device, None, repeats)
        measured["bf16_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return measured


def bench_gradcam(
    models: list[BenchModel], repeats: int = 10, devices: tuple[str, ...] = ("cpu",)
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for entry in models:
        result: dict[str, Any] = {"source": entry.source}
        for device in devices:
            if device == "cpu":
                measured = bench_model(entry.model, repeats=repeats)
            else:
                measured = bench_bf16(entry.model, device, repeats)
            result[device] = _with_target(measured)
        out[entry.name] = result
    return out
