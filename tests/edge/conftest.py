"""A real gateway over real sockets: uvicorn serving the real app (in a thread, so a test
can reach into its state; or as its own process, to measure its memory), and a raw
HTTP/1.1 client that sends exactly what a hostile client would."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from common.embedded import free_port
from tests.integration.conftest import ApiUser, make_user

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@dataclass
class Gateway:
    port: int
    app: FastAPI | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="package")
def gateway(stack_env: dict[str, str]) -> Iterator[Gateway]:
    """The real app behind uvicorn, in a thread of this process (one for tests/edge)."""
    from common.settings import Settings
    from services.gateway.app import create_app

    # A 1-second body read timeout and a 1 MiB upload limit keep the tests short.
    app = create_app(Settings(body_read_timeout_seconds=1.0, max_upload_bytes=MiB))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_healthy(f"http://127.0.0.1:{port}", lambda: thread.is_alive())
    yield Gateway(port, app)
    server.should_exit = True
    thread.join(10)


@dataclass
class GatewayProcess:
    port: int
    process: subprocess.Popen[bytes]

    def peak_rss_kib(self) -> int:
        """VmHWM: the most resident memory the process has had since it started."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.fixture(scope="module")
def gateway_process(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """The gateway as its own process (``aigi gateway``, one uvicorn process)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("gateway") / "gateway.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "gateway",
            "--port",
            str(port),
            "--loglevel",
            "warning",
        ],
        env={**os.environ, **stack_env, "AIGI_GATEWAY_WARM_CONNECTIONS": "1"},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", lambda: process.poll() is None)
        yield GatewayProcess(port, process=process)
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()
        log.close()


def _wait_healthy(url: str, alive: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert callable(alive) and alive(), "the gateway exited while starting"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"the gateway at {url} did not answer within {timeout} s")


@pytest.fixture
def edge_user(services: object, stack_env: dict[str, str]) -> ApiUser:
    return make_user(stack_env["AIGI_DATABASE_URL"])


# ---------------------------------------------------------------------------- raw HTTP
@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client managed to send before the answer (or a reset)

    def json(self) -> object:
        import json

        return json.loads(self.body)


def _read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before an answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


class RawConnection:
    """One keep-alive HTTP/1.1 connection; requests are written byte for byte."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Iterable[bytes] = (),
        chunked: bool = False,
        timeout: float = 10.0,
    ) -> RawAnswer:
        """Send the head, then the body piece by piece (chunk-encoded if ``chunked``),
        watching for an early answer after each piece: a server that refuses the body
        answers before it is all sent, and the client stops sending then, as curl
        does. A reset while sending ends the sending; the answer is read after."""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if chunked:
            headers = {**headers, "Transfer-Encoding": "chunked"}
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.sock.sendall(head.encode("latin-1"))
        sent = 0
        try:
            for piece in body:
                if select.select([self.sock], [], [], 0)[0]:
                    break  # answered early
                self.sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            else:
                if chunked:
                    self.sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, answer_headers, answer = _read_answer(self.sock, timeout)
        return RawAnswer(status, answer_headers, answer, sent)


def pieces(total: int, size: int = 64 * 1024, fill: bytes = b"a") -> Iterator[bytes]:
    """``total`` bytes in pieces of ``size``, made as they are sent (never held whole)."""
    block = fill * size
    while total > 0:
        yield block[: min(size, total)]
        total -= size
