"""The LLM backend: one chat call to TGI (or an OpenAI-compatible server), with the
answer constrained to a JSON schema where the server can.

Production serves Mistral-7B-Instruct-v0.3 with Hugging Face text-generation-inference
and calls it through ``huggingface_hub.InferenceClient.chat_completion``. Servers read
the schema from different shapes of ``response_format`` (``AIGI_LLM_SCHEMA_STYLE``):

* ``tgi``: ``{"type": "json_object", "value": schema}``, TGI's grammar;
* ``openai``: ``{"type": "json_schema", "json_schema": {"name", "schema"}}`` (OpenAI,
  vLLM, llama.cpp's server), and where a server refuses that shape (llama-cpp-python
  answers 422), ``{"type": "json_object", "schema": schema}`` (llama.cpp's JSON mode);
* ``none``: no constraint; the explainer runs the two-step free text + JSONifier flow;
* ``auto`` (default): ``GET /info`` once; a TGI answer means ``tgi``, else ``openai``.
  A server that refuses every shape is remembered as ``none`` for the process.

The client is a small subclass of ``InferenceClient`` that posts with an HTTP client
of its own (see :class:`ServerClient`), so ``HF_HUB_OFFLINE=1`` (which makes
huggingface_hub refuse every request on its shared session) does not break it, a
total deadline holds, and no Hugging Face token is sent to a self-hosted server.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2
from huggingface_hub import InferenceClient
from huggingface_hub.inference._common import RequestParameters

from common.settings import Settings
from services.explainer.prompt import SCHEMA_NAME

log = logging.getLogger("aigi.explainer")

TEMPERATURE = 0.2
PROBE_TIMEOUT_SECONDS = 5.0
FORMAT_WORDS = ("response_format", "json_schema", "grammar", "schema", "json_object")


class LLMError(Exception):
    """No usable answer, for a reason on the server's side (not the answer's content)."""


class LLMUnavailable(LLMError):
    """Connection refused or reset, timeout, 5xx, 429: worth a retry after a pause."""


class LLMRejected(LLMError):
    """The server refused the request (4xx): retrying the same request will not help."""


class SchemaUnsupported(LLMError):
    """The server cannot constrain its output to a JSON schema."""


class _FormatRejected(LLMRejected):
    """The server refused this shape of ``response_format``; another may work."""


@dataclass(frozen=True)
class Completion:
    text: str
    constrained: bool
    schema_style: str | None
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # the server's count (``usage``), where it gives one


class LLMBackend(Protocol):
    """What the explainer needs from an LLM server."""

    @property
    def model_id(self) -> str: ...

    def complete(
        self,
        prompt: str,
        *,
        schema: dict[str, Any] | None,
        max_tokens: int,
        timeout: float,
        seed: int = 0,
    ) -> Completion:
        """One user turn. With ``schema``, constrained output or :class:`SchemaUnsupported`."""
        ...


RESPONSE_FORMATS = {
    "tgi": lambda schema: {"type": "json_object", "value": schema},
    "openai-json_schema": lambda schema: {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": schema},
    },
    "openai-json_object": lambda schema: {"type": "json_object", "schema": schema},
}
STYLE_FORMATS = {
    "tgi": ("tgi",),
    "openai": ("openai-json_schema", "openai-json_object"),
    "none": (),
}


@dataclass(frozen=True)
class _CallOptions:
    deadline: float
    response_format: dict[str, Any] | None
    override_format: bool


_CALL: contextvars.ContextVar[_CallOptions | None] = contextvars.ContextVar(
    "aigi_llm_call", default=None
)


class ServerClient(InferenceClient):
    """``InferenceClient`` for one self-hosted server, on an HTTP client of its own.

    Overrides the one private method every call goes through (``_inner_post``, pinned
    huggingface_hub 2.x; the explainer tests exercise it against a real server):

    * huggingface_hub's shared session refuses every request when ``HF_HUB_OFFLINE=1``
      (meant for the Hub, it also blocks a local TGI); this client's own session has
      no such hook;
    * httpx timeouts bound each read, not the whole answer; the body is read in chunks
      against a total deadline;
    * ``InferenceClient`` rewrites OpenAI's ``json_schema`` response format into TGI's
      shape for every URL; for the ``openai`` style the caller's shape is put back;
    * without an API key, no ``Authorization`` header: ``InferenceClient`` would
      otherwise send the machine's Hugging Face token to the LLM server.
    """

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        super().__init__(base_url=base_url, api_key=api_key, timeout=timeout)
        self._has_key = api_key is not None
        self.http = httpx2.Client(follow_redirects=False, timeout=timeout)

    def _inner_post(  # type: ignore[override]
        self, request_parameters: RequestParameters, *, stream: bool = False
    ) -> bytes | Iterable[str]:
        if stream:
            raise NotImplementedError("the explainer does not stream")
        options = _CALL.get()
        deadline = options.deadline if options else time.monotonic() + float(self.timeout or 60)
        body = request_parameters.json
        if options and options.override_format and isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "response_format"}
            if options.response_format is not None:
                body["response_format"] = options.response_format
        headers = dict(request_parameters.headers)
        if not self._has_key:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        return post_json(self.http, request_parameters.url, body, headers, deadline)

    def close(self) -> None:
        self.http.close()
        super().close()


def post_json(
    http: httpx2.Client, url: str, body: object, headers: dict[str, Any], deadline: float
) -> bytes:
    """POST, read the whole answer before ``deadline``; errors as :class:`LLMError`."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise LLMUnavailable("no time left for the LLM call")
    chunks: list[bytes] = []
    try:
        with http.stream("POST", url, json=body, headers=headers, timeout=remaining) as response:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise LLMUnavailable(f"answer not complete within {remaining:.1f}s")
            status = response.status_code
    except httpx2.TimeoutException as exc:
        raise LLMUnavailable(f"timed out after {remaining:.1f}s ({type(exc).__name__})") from exc
    except httpx2.TransportError as exc:
        raise LLMUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from exc
    data = b"".join(chunks)
    if status < 400:
        return data
    text = data.decode("utf-8", "replace")[:500]
    sent_format = isinstance(body, dict) and "response_format" in body
    if status in (400, 422, 500) and sent_format and any(w in text.lower() for w in FORMAT_WORDS):
        # llama-cpp-python answers 500 to a request body it cannot validate.
        raise _FormatRejected(f"HTTP {status}: {text}")
    if status >= 500 or status in (408, 429):
        raise LLMUnavailable(f"HTTP {status}: {text}")
    raise LLMRejected(f"HTTP {status}: {text}")


class InferenceClientBackend:
    """The production backend (TGI through ``InferenceClient``); see the module doc."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        schema_style: str = "auto",
    ) -> None:
        if schema_style not in ("auto", *STYLE_FORMATS):
            raise ValueError(f"unknown schema style {schema_style!r}")
        self.url = url.rstrip("/")
        self.model = model
        self.schema_style = schema_style
        self.client = ServerClient(self.url, api_key, timeout)
        self._served_model: str | None = None
        self._formats: tuple[str, ...] | None = (
            None if schema_style == "auto" else STYLE_FORMATS[schema_style]
        )
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> InferenceClientBackend:
        if not settings.llm_url:
            raise ValueError("AIGI_LLM_URL is not set")
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        return cls(
            settings.llm_url,
            settings.llm_model,
            api_key=key,
            timeout=settings.llm_timeout_seconds,
            schema_style=settings.llm_schema_style,
        )

    @property
    def model_id(self) -> str:
        return self._served_model or self.model

    @property
    def resolved_formats(self) -> tuple[str, ...] | None:
        """The response formats still worth trying (None: ``auto`` not probed yet)."""
        return self._formats

    def _probe(self, timeout: float) -> tuple[str, ...]:
        """``auto``: ask ``GET /info``, which only TGI answers with its router info."""
        base = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        try:
            response = self.client.http.get(f"{base}/info", timeout=timeout)
        except httpx2.TimeoutException as exc:
            raise LLMUnavailable(f"probe of {base}/info timed out") from exc
        except httpx2.TransportError as exc:
            raise LLMUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from exc
        info: Any = None
        if response.status_code == 200:
            try:
                info = response.json()
            except ValueError:
                info = None
        is_tgi = (
            isinstance(info, dict)
            and "model_id" in info
            and ("router" in info or "max_total_tokens" in info or "max_input_tokens" in info)
        )
        if is_tgi:
            self._served_model = str(info["model_id"])
        style = "tgi" if is_tgi else "openai"
        log.info("llm schema style detected", extra={"style": style, "url": self.url})
        return STYLE_FORMATS[style]

    def _formats_to_try(self, timeout: float) -> tuple[str, ...]:
        with self._lock:
            if self._formats is None:
                self._formats = self._probe(min(timeout, PROBE_TIMEOUT_SECONDS))
            return self._formats

    def _drop_format(self, name: str) -> None:
        with self._lock:
            if self._formats and name in self._formats:
                self._formats = tuple(f for f in self._formats if f != name)
        log.warning("llm refused a response format", extra={"format": name, "url": self.url})

    def complete(
        self,
        prompt: str,
        *,
        schema: dict[str, Any] | None,
        max_tokens: int,
        timeout: float,
        seed: int = 0,
    ) -> Completion:
        deadline = time.monotonic() + timeout
        if schema is None:
            return self._chat(prompt, None, None, max_tokens, deadline, seed)
        for name in self._formats_to_try(timeout):
            try:
                return self._chat(prompt, name, schema, max_tokens, deadline, seed)
            except _FormatRejected:
                self._drop_format(name)
        raise SchemaUnsupported(f"{self.url} cannot constrain output to a JSON schema")

    def _chat(
        self,
        prompt: str,
        format_name: str | None,
        schema: dict[str, Any] | None,
        max_tokens: int,
        deadline: float,
        seed: int,
    ) -> Completion:
        response_format = (
            RESPONSE_FORMATS[format_name](schema) if format_name and schema is not None else None
        )
        token = _CALL.set(
            _CallOptions(deadline, response_format, override_format=format_name != "tgi")
        )
        try:
            output = self.client.chat_completion(
                messages=[{"role": "user", "content": prompt}],
                model=self.model,
                max_tokens=max_tokens,
                temperature=TEMPERATURE,
                seed=seed,
                response_format=response_format if format_name == "tgi" else None,  # type: ignore[arg-type]
            )
        except LLMError:
            raise
        except Exception as exc:  # a malformed answer body, or a client-side failure
            raise LLMRejected(f"unusable answer: {type(exc).__name__}: {exc}"[:300]) from exc
        finally:
            _CALL.reset(token)
        choices = getattr(output, "choices", None) or []
        if not choices:
            raise LLMRejected("the answer has no choices")
        message = choices[0].message
        usage = getattr(output, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        return Completion(
            text=(message.content or "") if message else "",
            constrained=format_name is not None,
            schema_style=format_name,
            finish_reason=choices[0].finish_reason,
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> InferenceClientBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
