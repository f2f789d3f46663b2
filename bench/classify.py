"""``classify``: a naive loop against the service's path, same images, same process.

Both paths start from the encoded image bytes, as a service receives them, so each
pays for decoding and preprocessing (PIL → tensor):

* ``naive``: one image at a time, fp32, a plain forward (autograd on, no
  ``torch.no_grad``/``inference_mode``), the way the report ran it.
* ``batched_fp32``: :class:`DetectorEngine` (batches of ``batch_size``, inference mode).
* ``service_int8``: the same engine on the dynamic-int8 model built the way an int8
  checkpoint loads (:func:`common.detector.quantize.load_quantized`). On CPU this is
  the service's path; its speedup over ``naive`` is the headline number.
* ``worker_int8_batch1``: int8 and inference mode, one image per call: what one
  classify task does with an int8 checkpoint (a task carries one job).

On CUDA the service path is bf16 autocast with batching against the naive fp32 loop.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from bench.models import BenchModel
from common.detector.config import Quantization
from common.detector.inference import DetectorEngine
from common.detector.model import Detector, count_parameters
from common.detector.preprocess import model_input
from common.images import decode_rgb

TARGET_SPEEDUP = 2.0
Labels = tuple[list[int], list[float]]


def int8_copy(model: Detector) -> Detector:
    """The model as an int8 checkpoint of it loads (Linear layers dynamic int8)."""
    from common.detector.quantize import load_quantized, quantized_state

    config = model.config.model_copy(
        update={"quantization": Quantization(), "model_id": f"{model.config.model_id}-int8"}
    )
    return load_quantized(config, quantized_state(model))


def naive_predict(model: Detector, data: list[bytes], device: str = "cpu") -> Labels:
    config = model.config
    labels, probs = [], []
    for item in data:
        image = decode_rgb(item)
        batch, _ = model_input(image, config.preprocessing)
        logits = model(batch.to(device)).mean(dim=0, keepdim=True)  # autograd on: plain forward
        temperature = config.temperature_for(*image.size)
        probs_row = torch.softmax(logits.detach().float() / temperature, 1)
        p = float(probs_row[0, 1])
        labels.append(int(p >= config.calibration.decision_threshold))
        probs.append(p)
    return labels, probs


@contextlib.contextmanager
def _autocast(device: str, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.split(":")[0], dtype=dtype):
        yield


def engine_predict(
    engine: DetectorEngine, data: list[bytes], dtype: torch.dtype | None = None
) -> Labels:
    images = [decode_rgb(item) for item in data]
    with _autocast(engine.device, dtype):
        predictions = engine.predict(images)
    return [p.label for p in predictions], [p.probability for p in predictions]


def measure(fn: Callable[[], Labels], count: int, repeats: int) -> tuple[dict[str, Any], Labels]:
    """Run once to warm up, then ``repeats`` timed runs; the median gives images/s."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "images_per_s": round(count / seconds, 2),
        "ms_per_image": round(1000.0 * seconds / count, 3),
        "runs_s": [round(t, 4) for t in times],
    }, result


def agreement(reference: Labels, candidate: Labels) -> dict[str, Any]:
    labels_a, probs_a = reference
    labels_b, probs_b = candidate
    same = sum(a == b for a, b in zip(labels_a, labels_b, strict=True))
    diffs = [abs(a - b) for a, b in zip(probs_a, probs_b, strict=True)]
    return {
        "label_agreement": round(same / max(1, len(labels_a)), 4),
        "images": len(labels_a),
        "mean_abs_prob_diff": round(statistics.fmean(diffs), 6) if diffs else 0.0,
        "max_abs_prob_diff": round(max(diffs), 6) if diffs else 0.0,
    }


def _speedup(fast: dict[str, Any], slow: dict[str, Any]) -> float:
    return round(fast["images_per_s"] / slow["images_per_s"], 3)


def bench_cpu(model: Detector, data: list[bytes], batch_size: int, repeats: int) -> dict[str, Any]:
    model = model.to("cpu").eval()
    n = len(data)
    naive, _ = measure(lambda: naive_predict(model, data), n, repeats)
    fp32_engine = DetectorEngine(model, "cpu", batch_size)
    batched, fp32_labels = measure(lambda: engine_predict(fp32_engine, data), n, repeats)
    int8_model = int8_copy(model)
    int8_engine = DetectorEngine(int8_model, "cpu", batch_size)
    service, int8_labels = measure(lambda: engine_predict(int8_engine, data), n, repeats)
    single = DetectorEngine(int8_model, "cpu", 1)
    worker, _ = measure(lambda: engine_predict(single, data), n, repeats)
    speedup = _speedup(service, naive)
    return {
        "naive": naive | {"path": "one image at a time, fp32, plain forward (autograd on)"},
        "batched_fp32": batched | {"path": f"DetectorEngine batch {batch_size}, inference_mode"},
        "service_int8": service
        | {"path": f"DetectorEngine batch {batch_size}, inference_mode, dynamic int8"},
        "worker_int8_batch1": worker
        | {"path": "DetectorEngine batch 1, inference_mode, dynamic int8 (one task)"},
        "speedup": speedup,
        "speedup_batched_fp32": _speedup(batched, naive),
        "speedup_worker_int8_batch1": _speedup(worker, naive),
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
        "agreement_int8_vs_fp32": agreement(fp32_labels, int8_labels),
    }


def bench_cuda(
    model: Detector, data: list[bytes], batch_size: int, repeats: int, device: str = "cuda"
) -> dict[str, Any]:
    gpu_model = copy.deepcopy(model).to(device).eval()
    n = len(data)
    naive, fp32_labels = measure(lambda: naive_predict(gpu_model, data, device), n, repeats)
    engine = DetectorEngine(gpu_model, device, batch_size)
    service, bf16_labels = measure(lambda: engine_predict(engine, data, torch.bfloat16), n, repeats)
    speedup = _speedup(service, naive)
    return {
        "naive": naive | {"path": "one image at a time, fp32, plain forward (autograd on)"},
        "service_bf16": service
        | {"path": f"DetectorEngine batch {batch_size}, inference_mode, bf16 autocast"},
        "speedup": speedup,
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
        "agreement_bf16_vs_fp32": agreement(fp32_labels, bf16_labels),
    }


def bench_classify(
    models: list[BenchModel],
    data_for: Callable[[BenchModel], list[bytes]],
    batch_size: int = 16,
    repeats: int = 2,
    devices: tuple[str, ...] = ("cpu",),
) -> dict[str, Any]:
    """Per model and device: images/s of each path, the speedup and the agreement."""
    out: dict[str, Any] = {}
    for entry in models:
        data = data_for(entry)
        result: dict[str, Any] = {
            "source": entry.source,
            "params": count_parameters(entry.model),
            "input_size": entry.model.config.preprocessing.input_size,
            "n_images": len(data),
            "batch_size": batch_size,
            "repeats": repeats,
        }
        for device in devices:
            if device == "cpu":
                result["cpu"] = bench_cpu(entry.model, data, batch_size, repeats)
            else:
                result[device] = bench_cuda(entry.model, data, batch_size, repeats, device)
        out[entry.name] = result
    return out
