"""Open-loop load against a running gateway; ``python -m bench load`` starts a stack itself.

    python -m bench.load --url http://127.0.0.1:8000 --key KEY --rates 50,100,200 --duration 10

For each rate: submit latency p50/p95/p99 (from the scheduled send time), errors,
then every accepted job is polled until done; jobs not done by ``--drain-timeout`` are
reported as lost. The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path

from bench.loadgen import images_needed, run_load
from bench.machine import machine_info, machine_line
from bench.models import synthetic_pngs
from bench.report import RENDER


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="API key (aigi key create ...)")
    parser.add_argument("--rates", default="50,100,200", help="requests/s, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds at each rate before measuring"
    )
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--image-size", type=int, default=64, help="side of the PNGs sent")
    parser.add_argument(
        "--seed", type=int, help="image seed (default: random, so no run hits the dedup cache)"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    size = (args.image_size, args.image_size)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    needed = images_needed(rates, args.duration, warmup=args.warmup)
    images = synthetic_pngs(needed, size, seed=seed * 10_000)
    rows = asyncio.run(
        run_load(
            args.url,
            args.key,
            rates,
            args.duration,
            images,
            args.drain_timeout,
            warmup=args.warmup,
        )
    )
    machine = machine_info()
    result = {"url": args.url, "rates": rows}
    print(machine_line(machine), file=sys.stderr)  # noqa: T201
    print("\n".join(RENDER["load"](result)), file=sys.stderr)  # noqa: T201
    payload = {"machine": machine, "load": result}
    if args.out:
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload))  # noqa: T201
    lost = sum(r["lost"] for r in rows)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
