"""An open-loop HTTP load generator for the gateway (raw HTTP/1.1 submits, httpx polls).

Open loop: request *i* of a rate *r* is sent at ``start + i / r`` whether or not the
earlier ones have answered, so a slow gateway cannot slow the arrivals down (no
coordinated omission). Submit latency is measured from the scheduled send time (and,
separately, from the actual one). After each rate the generator polls every accepted
job until it is ``done``/``failed``; a job that is neither by the drain deadline is
*lost*. Each image is unique, so no result is served from the dedup cache.

Submissions go through :class:`~bench.rawhttp.RawSender` (requests encoded
before the clock starts); the generator's own CPU use during the submit phase is
reported as ``generator_cpu_cores`` so a saturated generator cannot pass for a slow
gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from bench.rawhttp import RawSender, multipart_job_request
from common.collector import collector_frozen

FINAL = ("done", "failed")
ProfileHook = Callable[[float], contextlib.AbstractContextManager[dict[str, Any]]]


@dataclass
class Submitted:
    index: int
    scheduled: float  # loop clock
    sent: float  # loop clock
    answered: float  # loop clock
    wall_sent: float  # time.time(), comparable with the server's timestamps
    status_code: int | None = None
    job_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.job_id is not None

    @property
    def latency_ms(self) -> float:
        return (self.answered - self.scheduled) * 1000.0

    @property
    def service_ms(self) -> float:
        return (self.answered - self.sent) * 1000.0


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": round(ordered[-1], 2),
        "mean": round(statistics.fmean(ordered), 2),
    }


def finished_timestamp(view: dict[str, Any]) -> float | None:
    value = view.get("finished_at")
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


async def submit(sender: RawSender, index: int, request: bytes, scheduled: float) -> Submitted:
    loop = asyncio.get_running_loop()
    sent, wall = loop.time(), time.time()
    result = Submitted(index, scheduled, sent, sent, wall)
    try:
        response = await sender.send(request)
        result.status_code = response.status
        if response.status in (200, 202):
            result.job_id = str(json.loads(response.body)["id"])
        else:
            result.error = f"HTTP {response.status}"
    except (TimeoutError, OSError, EOFError, asyncio.LimitOverrunError) as exc:
        result.error = type(exc).__name__
    except (ValueError, KeyError) as exc:  # a malformed answer
        result.error = f"bad response: {type(exc).__name__}"
    result.answered = loop.time()
    return result


async def open_loop(
    sender: RawSender, key: str, images: list[bytes], rate: float, duration: float
) -> tuple[list[Submitted], float]:
    """Send ``rate * duration`` submissions at a fixed rate; wait for every answer.

    Returns the submissions and the cores this process used meanwhile."""
    loop = asyncio.get_running_loop()
    count = max(1, round(rate * duration))
    # callers pass unique images (images_needed)
    requests = [
        multipart_job_request(sender.netloc, key, images[i % len(images)], f"load-{i}.png")
        for i in range(count)
    ]
    cpu, wall = time.process_time(), time.monotonic()
    start = loop.time() + 0.05
    tasks = []
    for i, request in enumerate(requests):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(submit(sender, i, request, scheduled)))
    results = list(await asyncio.gather(*tasks))
    cores = (time.process_time() - cpu) / max(1e-9, time.monotonic() - wall)
    return results, cores


async def burst(
    sender: RawSender, key: str, images: list[bytes], concurrency: int = 8
) -> list[Submitted]:
    """Submit every image as fast as ``concurrency`` requests in flight allow."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, data: bytes) -> Submitted:
        request = multipart_job_request(sender.netloc, key, data, f"burst-{i}.png")
        async with gate:
            return await submit(sender, i, request, loop.time())

    return list(await asyncio.gather(*(one(i, d) for i, d in enumerate(images))))


async def await_completion(
    client: httpx.AsyncClient,
    job_ids: list[str],
    timeout: float,
    interval: float = 0.25,
    miss_limit: int = 8,
    final_pass_concurrency: int = 32,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Final views of the jobs that finished, and the ids that did not by ``timeout``.

    Jobs finish roughly in submission order, so each round walks the pending ids in
    order and stops after ``miss_limit`` unfinished ones: polling costs O(jobs), not
    O(jobs x rounds). The last pass looks at every pending id, many at a time.
    """
    pending = list(job_ids)
    final: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout

    async def check(job_id: str) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            response = await client.get(f"/v1/jobs/{job_id}")
            if response.status_code == 200:
                view = response.json()
                if view.get("status") in FINAL:
                    final[job_id] = view
                    return True
        return False

    while pending and time.monotonic() < deadline:
        misses, still = 0, []
        for index, job_id in enumerate(pending):
            if misses >= miss_limit:
                still.extend(pending[index:])
                break
            if not await check(job_id):
                misses += 1
                still.append(job_id)
        pending = still
        if pending:
            await asyncio.sleep(interval)
    gate = asyncio.Semaphore(final_pass_concurrency)

    async def last_look(job_id: str) -> bool:
        async with gate:
            return await check(job_id)

    finished = await asyncio.gather(*(last_look(job_id) for job_id in pending))
    return final, [job_id for job_id, done in zip(pending, finished, strict=True) if not done]


def summarize_submissions(results: list[Submitted]) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            errors[r.error or "unknown"] = errors.get(r.error or "unknown", 0) + 1
    sends = [r.sent for r in results]
    span = max(sends) - min(sends) if len(sends) > 1 else 0.0
    return {
        "submitted": len(results),
        "accepted": len(ok),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "achieved_rate": round((len(results) - 1) / span, 2) if span > 0 else None,
        "submit_latency_ms": percentiles([r.latency_ms for r in ok]),
        "submit_service_ms": percentiles([r.service_ms for r in ok]),
        "send_lag_ms": percentiles([(r.sent - r.scheduled) * 1000.0 for r in results]),
        "submit_latency_by_second": latency_by_second(results),
    }


def latency_by_second(results: list[Submitted]) -> list[dict[str, Any]]:
    """p50 / p99 / max of the answered submissions scheduled in each second: tells a
    few spikes from a latency that is high throughout."""
    if not results:
        return []
    start = min(r.scheduled for r in results)
    buckets: dict[int, list[float]] = {}
    for r in results:
        if r.ok:
            buckets.setdefault(int(r.scheduled - start), []).append(r.latency_ms)
    rows = []
    for second in sorted(buckets):
        stats = percentiles(buckets[second])
        rows.append(
            {"second": second, "count": len(buckets[second])}
            | {k: stats[k] for k in ("p50", "p99", "max")}
        )
    return rows


def summarize_completion(
    results: list[Submitted], final: dict[str, dict[str, Any]], lost: list[str]
) -> dict[str, Any]:
    sent_at = {r.job_id: r.wall_sent for r in results if r.job_id}
    finished = {job_id: finished_timestamp(view) for job_id, view in final.items()}
    e2e = [
        (end - sent_at[job_id]) * 1000.0
        for job_id, end in finished.items()
        if end is not None and job_id in sent_at
    ]
    ends = [end for end in finished.values() if end is not None]
    first = min(sent_at.values()) if sent_at else 0.0
    done = sum(1 for view in final.values() if view.get("status") == "done")
    return {
        "done": done,
        "failed": sum(1 for view in final.values() if view.get("status") == "failed"),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "completion_rate_jobs_per_s": round(done / (max(ends) - first), 2)
        if ends and max(ends) > first
        else None,
        "end_to_end_ms": percentiles(e2e),
    }


def client_for(url: str, key: str, connections: int = 64) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def run_rate(
    client: httpx.AsyncClient,
    sender: RawSender,
    key: str,
    images: list[bytes],
    rate: float,
    duration: float,
    drain_timeout: float,
    profile: ProfileHook | None = None,
    warmup: float = 0.0,
    gateway_cpu: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """One open loop of ``warmup + duration`` seconds at ``rate``.

    Latency counts only the submissions after the first ``warmup`` seconds (the
    gateway's connection pools and threads grow under the new load meanwhile); the
    schedule does not pause in between, so a backlog built during the warm-up still
    shows. Every job, warm-up included, is followed to the end for done/lost.

    ``gateway_cpu`` (the gateway's CPU seconds so far) gives the gateway's CPU per
    submission over the whole loop: the same code costing more in one run than in
    another means a slower or busier machine, which explains a slower run."""
    cpu_before = gateway_cpu() if gateway_cpu else 0.0
    with (
        collector_frozen(),  # the generator's own collections would count as latency
        profile(warmup + duration) if profile else contextlib.nullcontext({}) as profiled,
    ):
        results, generator_cores = await open_loop(sender, key, images, rate, warmup + duration)
    cpu_used = gateway_cpu() - cpu_before if gateway_cpu else None
    warm_count = min(len(results) - 1, round(rate * warmup))
    measured = results[warm_count:]
    submitted = summarize_submissions(measured)
    submitted["generator_cpu_cores"] = round(generator_cores, 2)
    if cpu_used is not None:
        submitted["gateway_cpu_ms_per_submission"] = round(cpu_used / len(results) * 1000, 2)
    submitted["warmup_s"] = warmup
    submitted["warmup_submissions"] = warm_count
    submitted["warmup_errors"] = sum(1 for r in results[:warm_count] if not r.ok)
    ids = [r.job_id for r in results if r.job_id]
    started = time.monotonic()
    final, lost = await await_completion(client, ids, drain_timeout)
    completion = summarize_completion(results, final, lost)
    completion["drain_s"] = round(time.monotonic() - started, 2)
    out = {"rate": rate, "duration_s": duration, **submitted, **completion}
    if profiled:
        out["profile"] = profiled
    return out


async def run_load(
    url: str,
    key: str,
    rates: list[float],
    duration: float,
    images: list[bytes],
    drain_timeout: float = 600.0,
    profile: ProfileHook | None = None,
    profile_rate: float | None = None,
    warm_jobs: int = 1,
    warmup: float = 0.0,
    gateway_cpu: Callable[[], float] | None = None,
) -> list[dict[str, Any]]:
    """Each rate in turn: an open-loop submit phase (after ``warmup`` seconds at the
    same rate), then a drain (the next rate waits).

    ``images[-warm_jobs:]`` first go through the whole pipeline, so every worker has
    loaded its model before the first rate starts.
    """
    out = []
    cursor = 0
    sender = RawSender(url)
    async with client_for(url, key) as client, contextlib.aclosing(sender):
        warm = await burst(sender, key, images[len(images) - warm_jobs :], warm_jobs)
        await await_completion(client, [r.job_id for r in warm if r.job_id], drain_timeout)
        for rate in rates:
            count = max(1, round(rate * (warmup + duration)))
            chunk = images[cursor : cursor + count] or images
            cursor += count
            hook = profile if profile is not None and rate == profile_rate else None
            out.append(
                await run_rate(
                    client,
                    sender,
                    key,
                    chunk,
                    rate,
                    duration,
                    drain_timeout,
                    profile=hook,
                    warmup=warmup,
                    gateway_cpu=gateway_cpu,
                )
            )
    return out


def images_needed(
    rates: list[float], duration: float, warm_jobs: int = 1, warmup: float = 0.0
) -> int:
    """Unique images for every submission of every rate (warm-up seconds included),
    plus the jobs that warm the workers."""
    return sum(max(1, round(rate * (warmup + duration))) for rate in rates) + warm_jobs
