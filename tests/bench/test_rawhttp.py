"""The load generator's sender against a real socket server: framing and stale reuse."""

from __future__ import annotations

import asyncio

import pytest

from bench.rawhttp import RawSender, multipart_job_request


async def _serve(handler: object) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


def test_multipart_request_carries_the_image_and_the_key() -> None:
    request = multipart_job_request("h:1", "KEY", b"\x89PNG-bytes", "a.png")
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/jobs HTTP/1.1\r\nHost: h:1\r\n")
    assert b"Authorization: Bearer KEY" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert b'name="file"; filename="a.png"' in body and b"\x89PNG-bytes" in body


def test_keep_alive_chunked_and_a_connection_closed_while_idle() -> None:
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        first = True
        while True:
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            if first:
                writer.write(b'HTTP/1.1 202 Accepted\r\nContent-Length: 9\r\n\r\n{"id": 1}')
                first = False
            else:
                chunked = (
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
                )
                writer.write(chunked)
            await writer.drain()
            if len(connections) == 1:
                break  # the server drops the first connection after one answer
        writer.close()

    async def scenario() -> None:
        server, url = await _serve(handler)
        sender = RawSender(url, max_connections=4)
        request = multipart_job_request(sender.netloc, "k", b"img", "x.png")
        try:
            first = await sender.send(request)
            assert (first.status, first.body) == (202, b'{"id": 1}')
            await asyncio.sleep(0.05)  # the idle connection is now closed by the server
            second = await sender.send(request)  # retried on a fresh connection
            assert second.status == 202
            third = await sender.send(request)  # reuses the second connection
            assert (third.status, third.body) == (200, b"abcd")
            assert len(connections) == 2
        finally:
            await sender.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError, match="plain http"):
        RawSender("https://example.invalid")
