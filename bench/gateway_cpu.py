"""CPU per submission: the gateway's and Postgres's, one request at a time.

    python -m bench.gateway_cpu [--requests 400] [--image-size 64]

Starts a bench stack (no workers), one gateway process, and sends unique PNGs one
after another over a keep-alive connection. CPU comes from ``/proc/<pid>/stat`` of the
gateway and of every ``postgres`` process (the whole server: other databases' work
counts too, so run it on an otherwise idle machine). One request at a time measures
cost, not queueing: compare commits on the same day (this VM's speed drifts), e.g.
``git stash`` / rerun / ``git stash pop``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.models import synthetic_pngs
from bench.procstat import cpu_seconds, pids_named, process_tree
from bench.rawhttp import RawSender, multipart_job_request
from bench.stack import BenchStack
from common.detector.config import SHIPPED_MODEL


async def measure(url: str, key: str, requests: list[bytes], warm: int, gateway: list[int]) -> dict:
    sender = RawSender(url)
    try:
        for request in requests[:warm]:
            if (await sender.send(request)).status != 202:
                raise RuntimeError("warm-up submission refused")
        postgres = pids_named("postgres")
        gateway_0, postgres_0, wall_0 = (
            cpu_seconds(gateway),
            cpu_seconds(postgres),
            time.monotonic(),
        )
        for request in requests[warm:]:
            response = await sender.send(request)
            if response.status != 202:
                raise RuntimeError(
                    f"submission answered {response.status}: {response.body[:200]!r}"
                )
        wall = time.monotonic() - wall_0
        count = len(requests) - warm
        return {
            "requests": count,
            "wall_ms_per_request": round(wall / count * 1000, 2),
            "gateway_cpu_ms_per_request": round(
                (cpu_seconds(gateway) - gateway_0) / count * 1000, 2
            ),
            "postgres_cpu_ms_per_request": round(
                (cpu_seconds(pids_named("postgres")) - postgres_0) / count * 1000, 2
            ),
        }
    finally:
        await sender.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warm", type=int, default=50, help="unmeasured submissions first")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    images = synthetic_pngs(args.warm + args.requests, (args.image_size,) * 2, seed=50_000)
    with BenchStack(SHIPPED_MODEL) as stack:
        url = stack.start_gateway(1)
        assert stack.gateway is not None
        host = url.split("//", 1)[1]
        requests = [
            multipart_job_request(host, stack.key, data, f"cpu-{i}.png")
            for i, data in enumerate(images)
        ]
        gateway = process_tree(stack.gateway.pid)
        result = asyncio.run(measure(url, stack.key, requests, args.warm, gateway))
    print(json.dumps(result, indent=2))  # noqa: T201 - the result is the output


if __name__ == "__main__":
    main()
