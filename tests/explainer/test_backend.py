"""The InferenceClient backend on the wire, against small local HTTP/socket servers:
the response_format shapes, style detection, errors, timeouts, HF_HUB_OFFLINE and
credentials."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import huggingface_hub
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import OfflineModeIsEnabled

from common.artifacts import Taxonomy
from common.settings import Settings
from services.explainer.backend import (
    InferenceClientBackend,
    LLMRejected,
    LLMUnavailable,
    SchemaUnsupported,
)
from services.explainer.explainer import Explainer
from services.explainer.inputs import VerdictInput
from services.explainer.prompt import response_schema
from tests.explainer.conftest import (
    Recorded,
    RecordingServer,
    SilentServer,
    Track,
    TricklingServer,
    chat_answer,
    free_port,
)

ANSWER = json.dumps({"artificial_smoothness": "The upper left region is too smooth."})
TGI_INFO = {
    "model_id": "mistralai/Mistral-7B-Instruct-v0.3",
    "router": "text-generation-router",
    "max_total_tokens": 8192,
    "version": "3.3.6",
}
Start = Callable[[Callable[[Recorded], tuple[int, Any]]], RecordingServer]


def tgi(request: Recorded) -> tuple[int, Any]:
    if request.method == "GET" and request.path == "/info":
        return 200, TGI_INFO
    return 200, chat_answer(ANSWER)


def openai_like(request: Recorded) -> tuple[int, Any]:
    if request.method == "GET":
        return 404, {"detail": "Not Found"}
    return 200, chat_answer(ANSWER)


def llama_cpp_like(request: Recorded) -> tuple[int, Any]:
    """Refuses OpenAI's json_schema shape the way llama-cpp-python does."""
    if request.method == "GET":
        return 404, {"detail": "Not Found"}
    if (request.body.get("response_format") or {}).get("type") == "json_schema":
        return 500, {
            "error": {
                "message": "('body', 'response_format', 'type'): Input should "
                "be 'text' or 'json_object'"
            }
        }
    return 200, chat_answer(ANSWER)


def test_tgi_detected_and_sent_its_grammar_shape(
    track: Track, recording_server: Start, taxonomy: Taxonomy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_must_not_leak")
    assert huggingface_hub.get_token() == "hf_must_not_leak"
    server = recording_server(tgi)
    schema = response_schema(taxonomy.keys)
    backend = track(InferenceClientBackend(server.url, "configured-model"))
    completion = backend.complete("explain", schema=schema, max_tokens=64, timeout=5, seed=3)
    assert completion.text == ANSWER and completion.constrained
    assert completion.schema_style == "tgi"
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/info"),
        ("POST", "/v1/chat/completions"),
    ]
    body = server.posts()[0].body
    assert body["response_format"] == {"type": "json_object", "value": schema}
    assert body["messages"] == [{"role": "user", "content": "explain"}]
    assert body["model"] == "configured-model"
    assert body["max_tokens"] == 64 and body["seed"] == 3
    assert backend.model_id == TGI_INFO["model_id"]  # what the server says it serves
    assert all("authorization" not in r.headers for r in server.requests)


def test_openai_style_sends_json_schema(
    track: Track, recording_server: Start, taxonomy: Taxonomy
) -> None:
    server = recording_server(openai_like)
    schema = response_schema(taxonomy.keys)
    backend = track(InferenceClientBackend(server.url + "/v1", "m", api_key="secret-key"))
    completion = backend.complete("explain", schema=schema, max_tokens=64, timeout=5)
    assert completion.schema_style == "openai-json_schema"
    assert server.requests[0].path == "/info"  # probed at the root, not under /v1
    post = server.posts()[0]
    assert post.path == "/v1/chat/completions"
    assert post.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "artifact_explanations", "schema": schema},
    }
    assert post.headers["authorization"] == "Bearer secret-key"
    assert backend.model_id == "m"


def test_refused_shape_falls_back_to_json_object_and_is_remembered(
    track: Track, recording_server: Start, taxonomy: Taxonomy
) -> None:
    server = recording_server(llama_cpp_like)
    schema = response_schema(taxonomy.keys)
    backend = track(InferenceClientBackend(server.url, "m", schema_style="openai"))
    first = backend.complete("explain", schema=schema, max_tokens=64, timeout=5)
    second = backend.complete("explain", schema=schema, max_tokens=64, timeout=5)
    assert first.schema_style == second.schema_style == "openai-json_object"
    formats = [r.body["response_format"]["type"] for r in server.posts()]
    assert formats == ["json_schema", "json_object", "json_object"]
    assert server.posts()[1].body["response_format"] == {"type": "json_object", "schema": schema}
    assert not any(r.method == "GET" for r in server.requests)  # no probe for a fixed style


def test_server_refusing_every_shape(
    track: Track, recording_server: Start, taxonomy: Taxonomy
) -> None:
    def refuse(request: Recorded) -> tuple[int, Any]:
        if "response_format" in request.body:
            return 422, {"error": "Grammar is not supported by this server"}
        return 200, chat_answer("free text")

    server = recording_server(refuse)
    schema = response_schema(taxonomy.keys)
    backend = track(InferenceClientBackend(server.url, "m", schema_style="tgi"))
    with pytest.raises(SchemaUnsupported):
        backend.complete("explain", schema=schema, max_tokens=64, timeout=5)
    with pytest.raises(SchemaUnsupported):
        backend.complete("explain", schema=schema, max_tokens=64, timeout=5)
    assert len(server.posts()) == 1  # remembered: no second refused request
    free = backend.complete("explain", schema=None, max_tokens=64, timeout=5)
    assert free.text == "free text" and not free.constrained
    assert "response_format" not in server.posts()[-1].body


def test_hf_hub_offline_does_not_break_the_client(
    track: Track, recording_server: Start, taxonomy: Taxonomy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    server = recording_server(tgi)
    stock = InferenceClient(base_url=server.url)
    with pytest.raises(OfflineModeIsEnabled):  # what the stock client does offline
        stock.chat_completion(messages=[{"role": "user", "content": "x"}], max_tokens=4)
    backend = track(InferenceClientBackend(server.url, "m", schema_style="tgi"))
    completion = backend.complete(
        "x", schema=response_schema(taxonomy.keys), max_tokens=4, timeout=5
    )
    assert completion.text == ANSWER


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, LLMUnavailable), (429, LLMUnavailable), (401, LLMRejected), (404, LLMRejected)],
)
def test_http_errors(
    track: Track, recording_server: Start, status: int, error: type[Exception]
) -> None:
    server = recording_server(lambda r: (status, {"error": "nope"}))
    backend = track(InferenceClientBackend(server.url, "m", schema_style="none"))
    with pytest.raises(error, match=f"HTTP {status}"):
        backend.complete("x", schema=None, max_tokens=4, timeout=5)


def test_garbage_answer_is_rejected(track: Track, recording_server: Start) -> None:
    server = recording_server(lambda r: (200, {"unexpected": True}))
    backend = track(InferenceClientBackend(server.url, "m", schema_style="none"))
    with pytest.raises(LLMRejected, match=r"no choices|unusable"):
        backend.complete("x", schema=None, max_tokens=4, timeout=5)


def test_connection_refused(track: Track) -> None:
    backend = track(InferenceClientBackend(f"http://127.0.0.1:{free_port()}", "m"))
    with pytest.raises(LLMUnavailable, match="Connect"):
        backend.complete("x", schema={"type": "object"}, max_tokens=4, timeout=5)


def test_silent_server_times_out(track: Track, silent_server: SilentServer) -> None:
    backend = track(InferenceClientBackend(silent_server.url, "m", schema_style="openai"))
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="timed out"):
        backend.complete("x", schema={"type": "object"}, max_tokens=4, timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_trickling_answer_hits_the_total_deadline(
    track: Track, trickling_server: TricklingServer
) -> None:
    """Each byte arrives well within the read timeout; the whole answer never does."""
    backend = track(InferenceClientBackend(trickling_server.url, "m", schema_style="none"))
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="not complete within"):
        backend.complete("x", schema=None, max_tokens=4, timeout=1.0)
    assert time.monotonic() - started < 2.0


def test_explainer_total_time_holds_against_a_silent_server(
    track: Track,
    silent_server: SilentServer,
    fake_verdict: VerdictInput,
    document: dict[str, Any],
    taxonomy: Taxonomy,
) -> None:
    """Explain task limit 8 s → soft limit 3 s → at most 2 s of LLM time for all the
    calls and retries together, though every call would hang."""
    settings = Settings(
        llm_url=silent_server.url, llm_timeout_seconds=2, explain_time_limit_seconds=8
    )
    explainer = track(Explainer(InferenceClientBackend.from_settings(settings), taxonomy, settings))
    started = time.monotonic()
    result = explainer.explain(fake_verdict, document)
    elapsed = time.monotonic() - started
    assert result.source == "evidence" and result.error and "timed out" in result.error
    assert elapsed < 3.0, elapsed
