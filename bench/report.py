"""Results on disk: one JSON file per benchmark and a Markdown summary of them all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.machine import ROOT, machine_line

RESULTS_DIR = ROOT / "bench" / "results"
ITEMS = ("classify", "gradcam", "photo_12mp", "queue_overhead", "scaling", "load", "explain")
SUMMARY = "summary.md"


def write_result(name: str, result: Any, machine: dict[str, Any], out_dir: Path) -> Path:
    """``<out_dir>/<name>.json`` = ``{"machine": ..., name: result}``; refreshes the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"machine": machine, name: result}, indent=2) + "\n")
    write_summary(out_dir)
    return path


def load_results(out_dir: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for name in ITEMS:
        path = out_dir / f"{name}.json"
        if path.is_file():
            found[name] = json.loads(path.read_text())
    return found


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _classify(result: dict[str, Any]) -> list[str]:
    rows = []
    for model, entry in result["models"].items():
        for device in ("cpu", "cuda"):
            r = entry.get(device)
            if not r:
                continue
            fast = r.get("service_int8") or r.get("service_bf16") or {}
            agree = r.get("agreement_int8_vs_fp32") or r.get("agreement_bf16_vs_fp32") or {}
            rows.append(
                [
                    model,
                    device,
                    r["naive"]["images_per_s"],
                    r.get("batched_fp32", {}).get("images_per_s"),
                    fast.get("images_per_s"),
                    r.get("worker_int8_batch1", {}).get("images_per_s"),
                    r["speedup"],
                    r["meets_target"],
                    agree.get("label_agreement"),
                ]
            )
    header = ["model", "device", "naive img/s", "batched fp32 img/s", "service img/s"]
    header += ["int8 batch-1 img/s", "speedup", "≥ 2x", "label agreement (int8 or bf16 vs fp32)"]
    return _table(header, rows)


def _gradcam(result: dict[str, Any]) -> list[str]:
    rows = [
        [model, device, r["forward_ms"], r["gradcam_ms"], r["ratio"], r["meets_target"]]
        for model, entry in result.items()
        for device, r in entry.items()
        if device != "source"
    ]
    return _table(["model", "device", "forward ms", "Grad-CAM ms", "ratio", "≤ 1.2x"], rows)


def _queue(result: dict[str, Any]) -> list[str]:
    rows = []
    for device, r in (("cpu", result), ("cuda", result.get("cuda") or {})):
        if "queue_ms_per_image" not in r:
            continue
        rows.append(
            [
                result["model"],
                r.get("device", device),
                r["images"],
                r["queue_ms_per_image"]["median"],
                r["in_process_ms_per_image"]["median"],
                r["overhead_pct"],
                r["meets_target"],
                r["transport_ms"]["median"],
                r["model_work_ms_per_image"]["median"],
                r["overhead_pct_vs_model_work"],
            ]
        )
    header = ["model", "device", "images", "queue ms/img (median)", "same stages in-process"]
    extra = ["overhead %", "≤ 10%", "transport ms", "model work only ms", "vs model work %"]
    lines = _table([*header, *extra], rows)
    if (result.get("cuda") or {}).get("error"):
        lines += ["", f"cuda: {result['cuda']['error']}"]
    return lines


def _scaling(result: dict[str, Any]) -> list[str]:
    rows = [
        [count, run["done"], run["lost"], run["completion_rate_jobs_per_s"]]
        for count, run in result["workers_per_stage"].items()
    ]
    lines = _table(["workers per stage", "jobs done", "lost", "jobs/s"], rows)
    return [*lines, "", f"model: {result['model']}; 2 vs 1: {_fmt(result.get('speedup_2_vs_1'))}x"]


def _load(result: dict[str, Any]) -> list[str]:
    rows = []
    for r in result["rates"]:
        lat = r["submit_latency_ms"]
        rows.append(
            [
                r["rate"],
                r["achieved_rate"],
                lat["p50"],
                lat["p95"],
                lat["p99"],
                r["errors"],
                r["done"],
                r["lost"],
                r["completion_rate_jobs_per_s"],
                r["end_to_end_ms"]["p50"],
                r.get("generator_cpu_cores"),
                r.get("gateway_cpu_ms_per_submission"),
            ]
        )
    header = ["rate req/s", "achieved", "submit p50 ms", "p95", "p99", "errors", "done", "lost"]
    extra = ["completed jobs/s", "e2e p50 ms", "generator cores", "gateway CPU ms/submission"]
    lines = _table([*header, *extra], rows)
    warmups = {r.get("warmup_s") for r in result["rates"]}
    if warmups - {None, 0}:
        lines += [
            "",
            f"Latency after {', '.join(_fmt(w) for w in sorted(warmups - {None}))} s at each "
            "rate (warm-up); done/lost count every job, warm-up included.",
        ]
    for r in result["rates"]:
        profile = r.get("profile") or {}
        if profile.get("own_code_inclusive"):
            meaning = profile.get("meaning", "share of samples")
            lines += ["", f"Gateway profile at {_fmt(r['rate'])} req/s ({meaning}):"]
            lines += [f"- {e['share']:.1%} {e['frame']}" for e in profile["own_code_inclusive"][:8]]
        elif profile.get("error"):
            lines += ["", f"profile: {profile['error']}"]
    return lines


def _explain(result: dict[str, Any]) -> list[str]:
    if result.get("skipped"):
        return [f"Skipped: {result['skipped']}."]
    rows = [
        [
            result["model"],
            result["threads"],
            result["jobs"],
            result["seconds_p50"],
            result["seconds_p90"],
            result["first_job_seconds"],
            result["prompt_tokens_per_call_mean"],
            result["llm_calls_mean"],
            result["llm_share"],
            result["grounded_rate_mean"],
        ]
    ]
    header = [
        "model",
        "threads",
        "jobs",
        "p50 s",
        "p90 s",
        "first job s",
        "prompt tokens/call",
        "LLM calls/job",
        "LLM share",
        "grounded rate",
    ]
    return [*_table(header, rows), "", f"Target: {result['target']}."]


def _photo(result: dict[str, Any]) -> list[str]:
    image = result["image"]
    rows = [
        [
            name,
            entry["crops_scored"],
            entry["classify_ms"]["p50"],
            entry["forward_ms_p50"],
            entry["gradcam_ms_p50"],
            entry["gradcam_over_forward"],
        ]
        for name, entry in result["models"].items()
    ]
    header = ["model", "crops", "classify p50 ms", "forward ms", "Grad-CAM ms", "Grad-CAM/forward"]
    targets = result["targets"]
    return [
        f"One {image['width']}x{image['height']} JPEG ({image['jpeg_bytes']} bytes), "
        f"{result['threads']} threads, {result['repeats']} repeats.",
        "",
        *_table(header, rows),
        "",
        f"Targets: classify p50 <= {targets['classify_ms_p50']} ms (decode included), "
        f"Grad-CAM <= {targets['gradcam_over_forward']}x the forward.",
    ]


RENDER = {
    "photo_12mp": _photo,
    "classify": _classify,
    "gradcam": _gradcam,
    "queue_overhead": _queue,
    "scaling": _scaling,
    "load": _load,
    "explain": _explain,
}


def render_summary(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m bench`; one JSON file per item here.",
    ]
    for name, payload in results.items():
        lines += ["", f"## {name}", "", f"_{machine_line(payload['machine'])}_"]
        if payload["machine"].get("warning"):
            lines += ["", f"> {payload['machine']['warning']}"]
        lines += ["", *RENDER[name](payload[name])]
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path) -> Path:
    path = out_dir / SUMMARY
    path.write_text(render_summary(load_results(out_dir)))
    return path
