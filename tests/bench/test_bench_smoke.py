"""The benchmarks run end to end on tiny settings and write the promised JSON shape.

Speed is never asserted here: these tests check the mechanics and the result keys.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bench.classify import bench_cuda
from bench.gradcam import bench_bf16
from bench.loadgen import images_needed, percentiles, run_load
from bench.models import synthetic_pngs, tiny_detector
from bench.procstat import tree_cpu_seconds
from bench.queue import RECEIVER_ENV, bench_queue
from bench.report import load_results, render_summary, write_result
from bench.runner import Plan, run_classify, run_gradcam
from bench.scaling import bench_scaling
from bench.stack import BenchStack

MACHINE_KEYS = {"cpu_model", "cores", "torch_threads", "loadavg_1m", "cuda"}
LATENCY_KEYS = {"p50", "p95", "p99", "max", "mean"}


def _read(out: Path, item: str) -> dict:
    payload = json.loads((out / f"{item}.json").read_text())
    assert set(payload) == {"machine", item}
    assert set(payload["machine"]) >= MACHINE_KEYS
    return payload[item]


def test_classify_writes_paths_speedup_and_agreement(tmp_path: Path) -> None:
    run_classify(Plan.quick(tmp_path))
    result = _read(tmp_path, "classify")
    assert result["images"]["count"] == 6
    entry = result["models"]["bench-tiny-compact"]
    assert entry["n_images"] == 6 and entry["params"] > 0
    cpu = entry["cpu"]
    for path in ("naive", "batched_fp32", "service_int8", "worker_int8_batch1"):
        assert cpu[path]["images_per_s"] > 0 and cpu[path]["ms_per_image"] > 0
        assert isinstance(cpu[path]["path"], str)
    assert isinstance(cpu["speedup"], float) and isinstance(cpu["meets_target"], bool)
    agreement = cpu["agreement_int8_vs_fp32"]
    assert 0.0 <= agreement["label_agreement"] <= 1.0 and agreement["images"] == 6
    assert "## classify" in (tmp_path / "summary.md").read_text()


def test_classify_accelerator_path_runs_on_cpu_autocast() -> None:
    """The CUDA code path (bf16 autocast, batching) exercised on the CPU."""
    result = bench_cuda(tiny_detector(), synthetic_pngs(4, (40, 40)), 2, 1, device="cpu")
    assert result["service_bf16"]["images_per_s"] > 0
    assert 0.0 <= result["agreement_bf16_vs_fp32"]["label_agreement"] <= 1.0


def test_gradcam_ratio_per_model(tmp_path: Path) -> None:
    run_gradcam(Plan.quick(tmp_path))
    cpu = _read(tmp_path, "gradcam")["bench-tiny-compact"]["cpu"]
    assert {"forward_ms", "gradcam_ms", "ratio", "target_ratio", "meets_target"} <= set(cpu)
    assert cpu["ratio"] > 0


def test_photo_item_times_classify_and_gradcam_per_model(tmp_path: Path) -> None:
    from bench.runner import run_photo

    run_photo(Plan.quick(tmp_path))
    result = _read(tmp_path, "photo_12mp")
    assert result["image"]["width"] == 300
    native = result["models"]["bench-tiny-native"]
    assert native["crops_scored"] == 4  # 300x200 with 64-px crops, a budget of 4
    assert result["models"]["bench-tiny-compact"]["crops_scored"] == 1
    for entry in result["models"].values():
        assert entry["classify_ms"]["p50"] > 0 and entry["gradcam_over_forward"] > 0


def test_gradcam_accelerator_path_falls_back_or_runs_bf16() -> None:
    result = bench_bf16(tiny_detector(), "cpu", repeats=1)
    assert result["dtype"] in ("bfloat16", "fp32")
    assert result["dtype"] == "bfloat16" or "bf16_error" in result


def test_percentiles_of_nothing_and_of_values() -> None:
    assert percentiles([]) == dict.fromkeys(LATENCY_KEYS)
    stats = percentiles([float(v) for v in range(1, 101)])
    assert stats["p50"] == 50.5 and stats["p99"] == 100.0 and stats["max"] == 100.0


def test_latency_by_second_buckets_by_scheduled_time() -> None:
    from bench.loadgen import Submitted, latency_by_second

    def answered(at: float, latency_ms: float, ok: bool = True) -> Submitted:
        return Submitted(0, at, at, at + latency_ms / 1000, 0.0, 202, "id" if ok else None)

    rows = latency_by_second(
        [answered(10.0, 5), answered(10.9, 7), answered(11.2, 300), answered(11.5, 1, ok=False)]
    )
    assert [(r["second"], r["count"], r["max"]) for r in rows] == [(0, 2, 7.0), (1, 1, 300.0)]
    assert latency_by_second([]) == []


# ---------------------------------------------------------------------------- real stack
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchStack]:
    from common.detector.checkpoint import save_checkpoint

    folder = save_checkpoint(tiny_detector(), tmp_path_factory.mktemp("bench-ckpt") / "tiny")
    torch.set_num_threads(1)
    with BenchStack(folder, torch_threads=1, extra_env=RECEIVER_ENV) as running:
        yield running


def test_queue_overhead_scaling_and_load_on_one_stack(stack: BenchStack, tmp_path: Path) -> None:
    machine = {"cpu_model": "x", "cores": 2, "torch_threads": 1, "loadavg_1m": 0.0, "cuda": False}
    machine |= {"loadavg_5m": 0.0}

    queue = bench_queue(stack, synthetic_pngs(3, (48, 48), seed=1), warmup=1, model_name="tiny")
    assert queue["images"] == 2 and queue["failed_jobs"] == 0
    timed = ("queue_ms_per_image", "in_process_ms_per_image", "model_work_ms_per_image")
    for key in (*timed, "transport_ms", "submit_ms"):
        assert {"median", "mean", "min", "max"} <= set(queue[key])
    assert {"classify", "gradcam", "explain"} <= set(queue["stages_ms"])
    assert isinstance(queue["overhead_pct"], float) and isinstance(queue["meets_target"], bool)
    write_result("queue_overhead", queue, machine, tmp_path)

    scaling = bench_scaling(stack, synthetic_pngs(5, (48, 48), seed=100), (1,), 120, "tiny")
    run = scaling["workers_per_stage"]["1"]
    assert run["done"] == 3 and run["lost"] == 0 and run["errors"] == 0
    assert run["completion_rate_jobs_per_s"] > 0
    write_result("scaling", scaling, machine, tmp_path)

    rates, duration, warmup = [4.0], 1.0, 0.5
    images = synthetic_pngs(images_needed(rates, duration, warmup=warmup), (48, 48), seed=200)
    url = stack.ensure_gateway()
    assert stack.gateway is not None
    gateway_cpu = functools.partial(tree_cpu_seconds, stack.gateway.pid)
    rows = asyncio.run(
        run_load(
            url, stack.key, rates, duration, images, 120, warmup=warmup, gateway_cpu=gateway_cpu
        )
    )
    (row,) = rows
    # 2 warm-up submissions (not in the latency), 4 measured; all 6 followed to the end
    assert row["warmup_submissions"] == 2 and row["warmup_errors"] == 0
    assert row["submitted"] == 4 and row["accepted"] == 4 and row["errors"] == 0
    assert row["done"] == 6 and row["lost"] == 0
    assert set(row["submit_latency_ms"]) == LATENCY_KEYS
    assert set(row["end_to_end_ms"]) == LATENCY_KEYS
    assert row["gateway_cpu_ms_per_submission"] >= 0  # /proc ticks: 10 ms, 6 submissions
    write_result("load", {"rates": rows}, machine, tmp_path)

    summary = render_summary(load_results(tmp_path))
    for section in ("## queue_overhead", "## scaling", "## load"):
        assert section in summary


def test_load_script_against_the_stack(stack: BenchStack, tmp_path: Path) -> None:
    from bench.load import main

    out = tmp_path / "load.json"
    argv = ["--url", stack.ensure_gateway(), "--key", stack.key, "--rates", "3", "--warmup", "0"]
    assert main([*argv, "--duration", "1", "--image-size", "40", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["load"]["rates"]
    assert row["done"] == 3 and row["lost"] == 0


def test_cli_commands_register_and_write_results(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from bench.cli import register

    app = typer.Typer()
    register(app)
    names = {command.name for command in app.registered_commands}
    assert {"classify", "gradcam", "queue", "scaling", "load", "all"} <= names
    result = CliRunner().invoke(
        app, ["classify", "--quick", "--threads", "1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "classify.json").is_file() and (tmp_path / "summary.md").is_file()
