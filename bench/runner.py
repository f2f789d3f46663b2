"""What ``python -m bench <item>`` and ``make bench`` run: settings, models, stacks, files."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.machine import (
    CpuSnapshot,
    cpu_snapshot,
    cuda_available,
    default_threads,
    machine_info,
    set_threads,
)
from bench.models import (
    BenchModel,
    bench_images,
    shipped_or_fallback,
    synthetic_pngs,
    tiny,
    tiny_native,
    vit_b16,
)
from bench.report import RESULTS_DIR, write_result
from bench.stack import BenchStack
from common.detector.config import COMPACT_CIFAKE_V1, WEIGHTS_DIR

CORE_ITEMS = ("classify", "gradcam", "photo_12mp", "queue_overhead", "scaling", "explain")


@dataclass
class Plan:
    """Sizes of every benchmark; ``quick()`` is the smoke-test size."""

    threads: int = field(default_factory=default_threads)
    devices: tuple[str, ...] = ()
    out_dir: Path = RESULTS_DIR
    images_dir: Path | None = None
    classify_models: tuple[str, ...] = ("shipped", "vit")
    classify_images: int = 256  # per compact model
    classify_vit_images: int = 32
    batch_size: int = 16
    repeats: int = 2
    gradcam_models: tuple[str, ...] = ("shipped", "vit")
    gradcam_repeats: int = 10
    photo_models: tuple[str, ...] = ("efficientnet-lite0-wild-v1", "compact-cifake-v1")
    photo_size: tuple[int, int] = (4000, 3000)
    photo_repeats: int = 10
    queue_model: str = "vit"
    queue_images: int = 20
    queue_warmup: int = 2
    scaling_model: str = "shipped"
    scaling_jobs: int = 40
    scaling_workers: tuple[int, ...] = (1, 2)
    explain_jobs: int = 12
    explain_threads: int = 2  # the explain stage's target is stated for 2 cores
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if not self.devices:
            self.devices = ("cpu", "cuda") if cuda_available() else ("cpu",)

    @classmethod
    def quick(cls, out_dir: Path, threads: int = 1) -> Plan:
        return cls(
            threads=threads,
            devices=("cpu",),
            out_dir=out_dir,
            classify_models=("tiny",),
            classify_images=6,
            classify_vit_images=2,
            batch_size=4,
            repeats=1,
            gradcam_models=("tiny",),
            gradcam_repeats=2,
            photo_models=("tiny", "tiny-native"),
            photo_size=(300, 200),
            photo_repeats=1,
            queue_model="tiny",
            queue_images=3,
            queue_warmup=1,
            scaling_model="tiny",
            scaling_jobs=4,
            scaling_workers=(1,),
            explain_jobs=2,
            explain_threads=1,
            timeout=120.0,
        )


def model_named(name: str) -> BenchModel:
    if name == "shipped":
        return shipped_or_fallback()
    if name == "vit":
        return vit_b16()
    if name == "tiny":
        return tiny()
    if name == "tiny-native":
        return tiny_native()
    if name == "compact-cifake-v1":
        return shipped_or_fallback(COMPACT_CIFAKE_V1)
    if (WEIGHTS_DIR / name / "config.json").is_file():  # any committed detector by name
        return shipped_or_fallback(WEIGHTS_DIR / name)
    raise ValueError(f"unknown model {name!r}; use shipped, vit, tiny or a folder of {WEIGHTS_DIR}")


@contextlib.contextmanager
def checkpoint(name: str) -> Iterator[tuple[Path, BenchModel]]:
    """A checkpoint folder for the workers: the shipped one, or a temporary copy."""
    from common.detector.checkpoint import save_checkpoint

    entry = model_named(name)
    if entry.source.get("checkpoint"):
        yield Path(entry.source["checkpoint"]), entry
        return
    with tempfile.TemporaryDirectory(prefix="aigi-bench-ckpt-") as tmp:
        yield save_checkpoint(entry.model, Path(tmp) / entry.name), entry


def _record(
    plan: Plan, name: str, result: dict[str, Any], since: CpuSnapshot | None
) -> dict[str, Any]:
    machine = machine_info(since)
    write_result(name, result, machine, plan.out_dir)
    return {"machine": machine, name: result}


def run_classify(plan: Plan) -> dict[str, Any]:
    since = cpu_snapshot()
    from bench.classify import bench_classify

    set_threads(plan.threads)
    models = [model_named(n) for n in plan.classify_models]
    most = max(plan.classify_images, plan.classify_vit_images)
    data, described = bench_images(most, plan.images_dir)

    def data_for(entry: BenchModel) -> list[bytes]:
        vit = entry.model.config.backbone.kind == "clip-vit"
        return data[: plan.classify_vit_images if vit else plan.classify_images]

    result = bench_classify(models, data_for, plan.batch_size, plan.repeats, plan.devices)
    return _record(plan, "classify", {"images": described, "models": result}, since)


def run_gradcam(plan: Plan) -> dict[str, Any]:
    since = cpu_snapshot()
    from bench.gradcam import bench_gradcam

    set_threads(plan.threads)
    models = [model_named(n) for n in plan.gradcam_models]
    return _record(
        plan, "gradcam", bench_gradcam(models, plan.gradcam_repeats, plan.devices), since
    )


def run_photo(plan: Plan) -> dict[str, Any]:
    since = cpu_snapshot()
    from bench.photo import bench_photo, synthetic_photo

    set_threads(plan.threads)
    models = [model_named(n) for n in plan.photo_models]
    data = synthetic_photo(*plan.photo_size)
    return _record(plan, "photo_12mp", bench_photo(models, data, plan.photo_repeats), since)


def run_queue(plan: Plan) -> dict[str, Any]:
    since = cpu_snapshot()
    from bench.queue import RECEIVER_ENV, bench_queue

    set_threads(plan.threads)
    images = synthetic_pngs(plan.queue_images + plan.queue_warmup, (256, 256), seed=10_000)
    results: dict[str, Any] = {}
    with checkpoint(plan.queue_model) as (path, entry):
        for device in plan.devices:
            extra = {"AIGI_MODEL_DEVICE": device, **RECEIVER_ENV}
            try:
                with BenchStack(path, plan.threads, extra_env=extra) as stack:
                    results[device] = bench_queue(stack, images, plan.queue_warmup, entry.name)
            except Exception as exc:
                if device == "cpu":
                    raise
                results[device] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    result = results["cpu"] | {k: v for k, v in results.items() if k != "cpu"}
    return _record(plan, "queue_overhead", result, since)


def run_scaling(plan: Plan) -> dict[str, Any]:
    since = cpu_snapshot()
    from bench.scaling import bench_scaling

    count = plan.scaling_jobs * len(plan.scaling_workers) + 2 * sum(plan.scaling_workers)
    images = synthetic_pngs(count, (64, 64), seed=20_000)
    with checkpoint(plan.scaling_model) as (path, entry), BenchStack(path, 1) as stack:
        result = bench_scaling(stack, images, plan.scaling_workers, plan.timeout, entry.name)
    return _record(plan, "scaling", result, since)


def run_load(
    plan: Plan,
    rates: list[float],
    duration: float,
    model: str = "shipped",
    workers: int = 1,
    gateway_processes: int = 1,
    profile: bool = False,
    worker_nice: int = 10,
    warmup: float = 0.0,
) -> dict[str, Any]:
    """Start a stack, then the open-loop load generator against its gateway."""
    since = cpu_snapshot()
    from bench.loadgen import images_needed
    from bench.loadgen import run_load as generate
    from bench.procstat import tree_cpu_seconds
    from bench.profile import pyspy_record

    warm = 2 * workers
    images = synthetic_pngs(images_needed(rates, duration, warm, warmup), (64, 64), seed=30_000)
    with checkpoint(model) as (path, entry), BenchStack(path, 1) as stack:
        stack.ensure_workers(workers, nice=worker_nice)
        url = stack.ensure_gateway(gateway_processes)
        assert stack.gateway is not None
        gateway_cpu = functools.partial(tree_cpu_seconds, stack.gateway.pid)
        hook = None
        if profile:
            pid, out = stack.gateway.pid, plan.out_dir / "load-gateway-profile.txt"

            def hook(seconds: float) -> contextlib.AbstractContextManager[dict[str, Any]]:
                return pyspy_record(pid, seconds, out)

        rows = asyncio.run(
            generate(
                url,
                stack.key,
                rates,
                duration,
                images,
                drain_timeout=plan.timeout,
                profile=hook,
                profile_rate=max(rates),
                warm_jobs=warm,
                warmup=warmup,
                gateway_cpu=gateway_cpu,
            )
        )
        result = {
            "model": entry.name,
            "workers_per_stage": workers,
            "gateway_processes": gateway_processes,
            "worker_nice": worker_nice,
            "warmup_s": warmup,
            "backing": dict(stack.backing),
            "target": "submit p99 <= 50 ms at 200 req/s, nothing lost",
            "rates": rows,
        }
    return _record(plan, "load", result, since)


def run_explain(plan: Plan) -> dict[str, Any]:
    from bench.explain import bench_explain

    since = cpu_snapshot()
    result = bench_explain(plan.explain_jobs, plan.explain_threads)
    return _record(plan, "explain", result, since)


RUNNERS = {
    "classify": run_classify,
    "gradcam": run_gradcam,
    "photo_12mp": run_photo,
    "queue_overhead": run_queue,
    "scaling": run_scaling,
    "explain": run_explain,
}


def run_items(plan: Plan, items: tuple[str, ...] = CORE_ITEMS) -> dict[str, Any]:
    """Run ``items`` in order; ``all.json`` holds each under its own key."""
    import json

    combined: dict[str, Any] = {}
    for item in items:
        payload = RUNNERS[item](plan)
        combined.setdefault("machine", payload["machine"])
        combined[item] = payload[item]
    (plan.out_dir / "all.json").write_text(json.dumps(combined, indent=2) + "\n")
    return combined
