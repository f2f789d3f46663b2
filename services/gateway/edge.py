"""The gateway's edge against hostile clients: bounded, timed request bodies and a JSON
500 that keeps the connection usable.

One pure ASGI middleware (no ``BaseHTTPMiddleware``: that one copies every message
through a task group) wraps ``receive`` and ``send`` of every HTTP request:

* **Body size.** A declared ``Content-Length`` over the limit is answered 413 before a
  byte of the body is read; a chunked (or under-declared) body is counted while it
  streams and refused at the first byte past the limit, so a gateway process never
  holds more than the limit of one request's body, whatever the client sends. The
  limit is :attr:`BodyLimits.upload_bytes` for a multipart submission
  (``POST /v1/jobs``) and :attr:`BodyLimits.other_bytes` for everything else (JSON
  submissions, reviews, dashboard forms).
* **Body read time.** Each wait for the next piece of the body is bounded by
  :attr:`BodyLimits.read_timeout` (``AIGI_BODY_READ_TIMEOUT_SECONDS``): a client that
  declares more than it sends, or stops sending, gets 408 instead of holding the
  request open. It is a gap timeout, like nginx's ``client_body_timeout``: a client
  that keeps trickling bytes stays within it, so a proxy in front should buffer
  request bodies (see docs/security.md).
* **Connection: close** on any answer given before the request's body was read to its
  end (401, 408, 413, 429, ...): the server then drops the connection instead of
  draining, byte by byte, a body nobody wants.
* **Unexpected exceptions** answer a JSON 500 with a request id (logged with the
  traceback) and are not re-raised, so the server keeps the keep-alive connection
  (Starlette's ``ServerErrorMiddleware`` answers plain text and re-raises, after which
  uvicorn closes the connection).

The two body errors are :class:`fastapi.HTTPException` subclasses: raised by
``receive`` inside a route (while FastAPI or the route reads the body), the app's
ordinary handler turns them into ``{"detail": ...}`` with their status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass

from fastapi import HTTPException
from pydantic import AfterValidator
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("aigi.gateway")

#: Every request body but an image upload: JSON submissions, reviews, dashboard forms.
OTHER_BODY_BYTES = 64 * 1024
#: What a multipart submission may carry beside the image: boundaries, part headers and
#: the small fields (explain, fresh, callback_url up to 2048 characters).
MULTIPART_OVERHEAD_BYTES = 64 * 1024
_CLOSE = {"Connection": "close"}


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body is over the {limit}-byte limit for this route; "
            "images go as multipart uploads of at most AIGI_MAX_UPLOAD_BYTES",
            headers=_CLOSE,
        )


class BodyTimeoutError(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            f"the request body stalled for {seconds:g} s; send the whole body promptly",
            headers=_CLOSE,
        )


@dataclass(frozen=True)
class BodyLimits:
    upload_bytes: int
    other_bytes: int = OTHER_BODY_BYTES
    read_timeout: float = 10.0

    @classmethod
    def for_uploads(cls, max_upload_bytes: int, read_timeout: float) -> BodyLimits:
        return cls(max_upload_bytes + MULTIPART_OVERHEAD_BYTES, OTHER_BODY_BYTES, read_timeout)

    def limit_for(self, scope: Scope, content_type: bytes) -> int:
        if (
            scope["method"] == "POST"
            and scope["path"].rstrip("/") == "/v1/jobs"
            and content_type.startswith(b"multipart/form-data")
        ):
            return self.upload_bytes
        return self.other_bytes


def _headers_of(scope: Scope) -> tuple[int | None, bool, bytes]:
    """Declared length (None when absent or unparsable), whether a body is announced,
    and the content type."""
    declared: int | None = None
    chunked = False
    content_type = b""
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"content-type":
            content_type = value.lower()
    return declared, chunked or bool(declared), content_type


async def send_json(
    send: Send, status: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, has_body, content_type = _headers_of(scope)
        limit = self.limits.limit_for(scope, content_type)
        if declared is not None and declared > limit:
            await send_json(send, 413, {"detail": BodyTooLargeError(limit).detail}, _CLOSE)
            return
        timeout = self.limits.read_timeout
        received = 0
        body_done = not has_body
        response_started = False

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # e.g. waiting for a disconnect: not a body read
                return await receive()
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeoutError(timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
                if not message.get("more_body", False):
                    body_done = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = list(message.get("headers", ()))
                if not body_done and (b"connection", b"close") not in headers:
                    # answered before the body was read to its end: do not drain it
                    message["headers"] = [*headers, (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracked_send)
        except (BodyTooLargeError, BodyTimeoutError) as exc:  # raised outside any route
            if response_started:
                raise
            await send_json(tracked_send, exc.status_code, {"detail": exc.detail}, _CLOSE)
        except ClientDisconnect:  # the client left mid-body: no one to answer, no error
            log.info("client disconnected", extra={"path": scope["path"]})
        except Exception:
            request_id = uuid.uuid4().hex
            log.exception(
                "unhandled error",
                extra={"request_id": request_id, "method": scope["method"], "path": scope["path"]},
            )
            if response_started:  # half an answer is out: only closing the connection is left
                raise
            await send_json(
                tracked_send,
                500,
                {
                    "detail": f"internal error; quote request id {request_id} when reporting it",
                    "request_id": request_id,
                },
                {"X-Request-ID": request_id},
            )


# ---------------------------------------------------------------------------- text
# Postgres refuses NUL in text; a NUL in any free text a client sends is answered 422
# where it is read, not a 500 where it is stored.
NUL_MESSAGE = "must not contain NUL (\\u0000) characters"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    return value


#: For pydantic fields: ``Annotated[str, NoNul]``.
NoNul = AfterValidator(_no_nul)


def refuse_nul(value: str | None, name: str) -> None:
    """422 when ``value`` (a form field, a header) holds a NUL character."""
    if value is not None and "\x00" in value:
        raise HTTPException(422, f"{name} {NUL_MESSAGE}")
