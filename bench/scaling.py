"""``scaling``: jobs/s completed with 1 and 2 worker processes per stage.

One stack (Postgres, Redis, gateway); for each worker count, fresh workers start, a
warm-up batch loads the model in every worker, then a batch of unique images is
submitted at once and the throughput is ``jobs / (last finished_at - first submit)``.
Each worker runs one torch thread, so N workers per stage use up to N cores.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.loadgen import (
    await_completion,
    burst,
    client_for,
    summarize_completion,
    summarize_submissions,
)
from bench.rawhttp import RawSender
from bench.stack import BenchStack


async def _batch(url: str, key: str, images: list[bytes], timeout: float) -> dict[str, Any]:
    sender = RawSender(url, max_connections=16)
    try:
        results = await burst(sender, key, images)
    finally:
        await sender.aclose()
    async with client_for(url, key, connections=16) as client:
        final, lost = await await_completion(
            client, [r.job_id for r in results if r.job_id], timeout
        )
    submitted = summarize_submissions(results)
    return {
        "submitted": submitted["submitted"],
        "errors": submitted["errors"],
        **summarize_completion(results, final, lost),
    }


def bench_scaling(
    stack: BenchStack,
    images: list[bytes],
    worker_counts: tuple[int, ...] = (1, 2),
    timeout: float = 600.0,
    model_name: str = "",
) -> dict[str, Any]:
    """``images`` is split: per count, ``2 * count`` warm-up jobs, then the batch."""
    runs: dict[str, Any] = {}
    needed = sum(2 * c for c in worker_counts)
    batch = (len(images) - needed) // len(worker_counts)
    if batch < 1:
        raise ValueError(f"need more than {needed} images for {worker_counts} workers")
    url = stack.ensure_gateway()
    cursor = 0
    for count in worker_counts:
        stack.ensure_workers(count)
        warm = images[cursor : cursor + 2 * count]
        batch_images = images[cursor + 2 * count : cursor + 2 * count + batch]
        cursor += 2 * count + batch
        asyncio.run(_batch(url, stack.key, warm, timeout))
        runs[str(count)] = asyncio.run(_batch(url, stack.key, batch_images, timeout))
    rates = {k: v["completion_rate_jobs_per_s"] for k, v in runs.items()}
    out: dict[str, Any] = {
        "model": model_name or str(stack.model_path),
        "jobs_per_batch": batch,
        "threads_per_worker": stack.torch_threads,
        "backing": dict(stack.backing),
        "workers_per_stage": runs,
        "jobs_per_s": rates,
    }
    if "1" in rates and "2" in rates and rates["1"] and rates["2"]:
        out["speedup_2_vs_1"] = round(rates["2"] / rates["1"], 3)
    return out
