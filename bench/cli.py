"""``python -m bench classify|gradcam|queue|scaling|explain|load|all``: measured here, never
in tests (``make bench`` runs ``all``, ``make bench-load`` runs ``load``).

Every command writes ``<out>/<item>.json`` (``{"machine": ..., "<item>": ...}``),
refreshes ``<out>/summary.md`` and prints the machine and the table on stderr; the
JSON goes to stdout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli.output import console, emit, fail

OutOption = Annotated[Path | None, typer.Option("--out", help="results folder")]
ThreadsOption = Annotated[
    int, typer.Option(help="torch threads (0: every core this process may use)")
]
#: Tables printed as they are: no wrapping at the terminal width, no markup.
PLAIN: dict[str, Any] = {"soft_wrap": True, "markup": False, "highlight": False}
QuickOption = Annotated[bool, typer.Option("--quick", help="smoke-test sizes (tiny model)")]


def _plan(out: Path | None, threads: int, quick: bool) -> Any:
    from bench.machine import default_threads
    from bench.report import RESULTS_DIR
    from bench.runner import Plan

    folder = out or RESULTS_DIR
    count = threads or default_threads()
    return Plan.quick(folder, count) if quick else Plan(threads=count, out_dir=folder)


def _tables(payload: dict[str, Any], items: tuple[str, ...]) -> None:
    from bench.machine import machine_line
    from bench.report import RENDER

    for item in items:
        console.print(f"\n{item}: {machine_line(payload['machine'])}", **PLAIN)
        console.print("\n".join(RENDER[item](payload[item])), **PLAIN)
    if payload["machine"].get("warning"):
        console.print(f"warning: {payload['machine']['warning']}", **PLAIN)


def _show(payload: dict[str, Any], item: str) -> None:
    _tables(payload, (item,))
    emit(payload)


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        fail(f"{name} must be comma-separated positive numbers, got {text!r}")
    return values


def classify(
    out: OutOption = None,
    threads: ThreadsOption = 0,
    quick: QuickOption = False,
    images: Annotated[
        Path | None, typer.Option(help="a folder of images (default: synthetic PNGs)")
    ] = None,
    models: Annotated[str, typer.Option(help="comma-separated: shipped, vit, tiny")] = (
        "shipped,vit"
    ),
    batch_size: int = 16,
    repeats: int = 2,
) -> None:
    """Naive loop against the service path (batching, inference mode, int8)."""
    from bench.runner import run_classify

    plan = _plan(out, threads, quick)
    plan.images_dir = images
    if not quick:
        plan.classify_models = tuple(m.strip() for m in models.split(",") if m.strip())
        plan.batch_size, plan.repeats = batch_size, repeats
    _show(run_classify(plan), "classify")


def queue(
    out: OutOption = None,
    threads: ThreadsOption = 0,
    quick: QuickOption = False,
    model: Annotated[str, typer.Option(help="vit (full size), shipped or tiny")] = "vit",
    count: Annotated[int, typer.Option("--images", help="measured images")] = 20,
) -> None:
    """Queue path (gateway → Redis → workers → Postgres) against one process."""
    from bench.runner import run_queue

    plan = _plan(out, threads, quick)
    if not quick:
        plan.queue_model, plan.queue_images = model, count
    _show(run_queue(plan), "queue_overhead")


def explain(
    out: OutOption = None,
    quick: QuickOption = False,
    jobs: Annotated[int, typer.Option(help="explanations to time")] = 12,
    threads: Annotated[int, typer.Option(help="llama.cpp threads")] = 2,
) -> None:
    """The explain stage against SmolLM2-135M-Instruct on llama.cpp: seconds, prompt
    tokens and grounded rate per job."""
    from bench.runner import run_explain

    plan = _plan(out, 1, quick)
    if not quick:
        plan.explain_jobs, plan.explain_threads = jobs, threads
    _show(run_explain(plan), "explain")


def scaling(
    out: OutOption = None,
    quick: QuickOption = False,
    model: Annotated[str, typer.Option(help="shipped, tiny or vit")] = "shipped",
    jobs: Annotated[int, typer.Option(help="jobs per batch")] = 40,
    workers: Annotated[str, typer.Option(help="workers per stage to compare")] = "1,2",
) -> None:
    """Jobs/s completed with 1 and 2 workers per stage."""
    from bench.runner import run_scaling

    plan = _plan(out, 1, quick)
    if not quick:
        counts = tuple(int(v) for v in _floats(workers, "--workers"))
        plan.scaling_model, plan.scaling_jobs, plan.scaling_workers = model, jobs, counts
    _show(run_scaling(plan), "scaling")


def load(
    out: OutOption = None,
    rates: Annotated[str, typer.Option(help="requests per second, comma-separated")] = (
        "50,100,200"
    ),
    duration: Annotated[float, typer.Option(help="seconds per rate")] = 10.0,
    model: Annotated[str, typer.Option(help="shipped, tiny or vit")] = "shipped",
    workers: Annotated[int, typer.Option(help="workers per stage")] = 1,
    gateway_processes: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    drain_timeout: Annotated[float, typer.Option(help="seconds to wait for the jobs")] = 600.0,
    profile: Annotated[
        bool, typer.Option(help="py-spy the gateway during the highest rate")
    ] = False,
    worker_nice: Annotated[
        int, typer.Option(help="CPU priority of the workers (nice); 0 = same as the gateway")
    ] = 10,
    warmup: Annotated[
        float,
        typer.Option(
            help="seconds at each rate before latency is measured (those jobs are still "
            "followed for done/lost)",
            min=0,
        ),
    ] = 3.0,
) -> None:
    """Start a local stack and drive its gateway with open-loop load."""
    from bench.runner import run_load

    plan = _plan(out, 1, False)
    plan.timeout = drain_timeout
    parsed = _floats(rates, "--rates")
    payload = run_load(
        plan, parsed, duration, model, workers, gateway_processes, profile, worker_nice, warmup
    )
    _show(payload, "load")


def run_all(
    out: OutOption = None,
    threads: ThreadsOption = 0,
    quick: QuickOption = False,
    items: Annotated[
        str,
        typer.Option(
            help="comma-separated: classify, gradcam, photo_12mp, queue_overhead, scaling, explain"
        ),
    ] = "classify,gradcam,photo_12mp,queue_overhead,scaling,explain",
    images: Annotated[Path | None, typer.Option(help="a folder of images for classify")] = None,
) -> None:
    """Every benchmark in one run (``make bench``); also writes ``all.json``."""
    from bench.runner import RUNNERS, run_items

    chosen = tuple(i.strip() for i in items.split(",") if i.strip())
    unknown = [i for i in chosen if i not in RUNNERS]
    if unknown:
        fail(f"unknown item(s) {unknown}; choose from {', '.join(RUNNERS)}")
    plan = _plan(out, threads, quick)
    plan.images_dir = images
    combined = run_items(plan, chosen)
    _tables(combined, chosen)
    emit(combined)


def gradcam(
    model: Annotated[Path | None, typer.Option("--model")] = None,
    repeats: int = 10,
    vit: Annotated[bool, typer.Option(help="also a full-size ViT-B/16 CLIP")] = True,
) -> None:
    """Grad-CAM time against one forward pass (last line: one JSON object)."""
    import torch

    from bench.gradcam_timing import bench_model, vit_b16_detector
    from common.detector.checkpoint import load_checkpoint

    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    detector = load_checkpoint(model)
    results = {detector.config.model_id: bench_model(detector, repeats=repeats)}
    console.print(f"{detector.config.model_id}: {results[detector.config.model_id]}")
    if vit:
        results["clip-vit-b16"] = bench_model(vit_b16_detector(), repeats=max(3, repeats // 2))
        console.print(f"clip-vit-b16: {results['clip-vit-b16']}")
    console.print(f"machine: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(json.dumps(results))  # noqa: T201 - the benchmark's contract is its last stdout line


def register(bench_app: typer.Typer) -> None:
    """Attach the commands to a Typer app (``python -m bench``'s own)."""
    bench_app.command("classify")(classify)
    bench_app.command("gradcam")(gradcam)
    bench_app.command("queue")(queue)
    bench_app.command("scaling")(scaling)
    bench_app.command("explain")(explain)
    bench_app.command("load")(load)
    bench_app.command("all")(run_all)


app = typer.Typer(
    help="Benchmarks (speed is measured here, never in tests).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
register(app)


def main() -> None:
    app()
