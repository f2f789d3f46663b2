"""Pre-encoded HTTP/1.1 POSTs over keep-alive connections: the load generator's sender.

httpx builds every multipart request in Python and walks its connection pool per
request; at the load benchmark's rates that work queued requests in the generator,
which showed up as the gateway's "latency" (docs/benchmarks.md). Here each request is
encoded once, before the clock starts, and sending it is one socket write plus a
header parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# Below uvicorn's keep-alive timeout (5 s): an older idle connection may be closing.
IDLE_REUSE_SECONDS = 2.0


@dataclass(frozen=True)
class RawResponse:
    status: int
    body: bytes


def multipart_job_request(
    host: str, key: str, data: bytes, filename: str, explain: bool = True
) -> bytes:
    """``POST /v1/jobs`` with ``file`` and ``explain`` fields, as bytes on the wire."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="explain"\r\n\r\n',
            b"true\r\n" if explain else b"false\r\n",
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
            b"Content-Type: image/png\r\n\r\n",
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class RawSender:
    """Sends pre-encoded requests to one ``http://host:port``; at most
    ``max_connections`` open at once (a request waits for a free one beyond that)."""

    def __init__(self, url: str, max_connections: int = 512, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the load generator speaks plain http://host:port only, not {url}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.netloc = parts.netloc
        self.timeout = timeout
        self._idle: list[tuple[Connection, float]] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._all: set[Connection] = set()

    async def send(self, request: bytes) -> RawResponse:
        async with self._slots:
            while self._idle:
                connection, idle_since = self._idle.pop()
                if time.monotonic() - idle_since < IDLE_REUSE_SECONDS:
                    try:
                        return await self._exchange(connection, request)
                    except (ConnectionError, asyncio.IncompleteReadError) as exc:
                        if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                            raise
                        # closed by the server while idle: the request never arrived
                else:
                    self._close(connection)
            return await self._exchange(await self._connect(), request)

    async def _exchange(self, connection: Connection, request: bytes) -> RawResponse:
        try:
            reader, writer = connection
            writer.write(request)
            await writer.drain()
            response, keep_alive = await asyncio.wait_for(_read(reader), self.timeout)
        except BaseException:
            self._close(connection)
            raise
        if keep_alive:
            self._idle.append((connection, time.monotonic()))
        else:
            self._close(connection)
        return response

    async def _connect(self) -> Connection:
        connection = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )
        self._all.add(connection)
        return connection

    def _close(self, connection: Connection) -> None:
        self._all.discard(connection)
        connection[1].close()

    async def aclose(self) -> None:
        for connection in list(self._all):
            self._close(connection)
            with contextlib.suppress(OSError):
                await connection[1].wait_closed()
        self._idle.clear()


async def _read(reader: asyncio.StreamReader) -> tuple[RawResponse, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" and not (
        version == "HTTP/1.0" and connection != "keep-alive"
    )
    return RawResponse(int(status), body), keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers from the gateway
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
