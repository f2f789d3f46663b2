"""What the hostile-client hardening costs a request: the edge middleware
(services/gateway/edge.py) around a trivial ASGI app, with a 2 KiB body in one message,
and the thread hop a submission now makes to be rate limited before its body is read.

    .venv/bin/python -m bench.edge_overhead

Prints microseconds per request (median of 7 runs of 20,000 requests each, or 2,000
hops). Plain ``asyncio``, no sockets: the difference is the middleware's own cost.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from services.gateway.edge import BodyLimits, EdgeMiddleware

BODY = b"x" * 2048
SCOPE: Scope = {
    "type": "http",
    "method": "POST",
    "path": "/v1/jobs",
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"2048")],
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    assert message["body"] == BODY
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> Message:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def send(message: Message) -> None:
    return None


async def per_request_us(target: object, n: int = 20_000) -> float:
    call = target  # an ASGI callable
    started = time.perf_counter()
    for _ in range(n):
        await call(dict(SCOPE), receive, send)  # type: ignore[operator]
    return (time.perf_counter() - started) / n * 1e6


async def hop_us(n: int = 2_000) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await run_in_threadpool(lambda: None)
    return (time.perf_counter() - started) / n * 1e6


async def main() -> None:
    wrapped = EdgeMiddleware(app, BodyLimits.for_uploads(20 * 1024 * 1024, 10.0))
    bare, edged, hops = [], [], []
    for _ in range(7):
        bare.append(await per_request_us(app))
        edged.append(await per_request_us(wrapped))
        hops.append(await hop_us())
    lines = [
        f"bare app            {statistics.median(bare):6.2f} us/request",
        f"with EdgeMiddleware {statistics.median(edged):6.2f} us/request",
        f"middleware cost     {statistics.median(edged) - statistics.median(bare):6.2f} us",
        f"one threadpool hop  {statistics.median(hops):6.2f} us (the rate limit's own)",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
