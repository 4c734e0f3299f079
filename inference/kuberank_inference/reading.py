"""Reading a request body: JSON in UTF-8, uncompressed, within the byte limit. Everything is
checked before the body is read, or while it is (aiohttp stops at client_max_size), and a body
that cannot be read or decoded is refused with the error the HTTP layer maps to a 4xx."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from kuberank_inference import payloads
from kuberank_inference.failures import (
    MalformedRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)


async def json_body(request: web.Request, *, limit: int) -> dict[str, Any]:
    """The JSON object of the body; its size is checked before it is read, and reading stops
    at the limit (aiohttp's client_max_size) for a chunked body without a length."""
    _check_media_type(request)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(too_large(limit))
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLargeError(too_large(limit)) from None
    except HttpProcessingError as error:
        raise MalformedRequestError(
            f"the request body could not be read: {error.message or type(error).__name__}"
        ) from None
    if len(raw) <= _DECODE_INLINE_BYTES:
        return payloads.decode_json(raw)
    # a large body parses in milliseconds: off the loop, so other requests are not held up
    return await asyncio.to_thread(payloads.decode_json, raw)


_JSON_TYPES = frozenset({"application/json"})
_IDENTITY = frozenset({"", "identity"})
# bodies up to this size are decoded on the event loop; larger ones on a worker thread
_DECODE_INLINE_BYTES = 64 * 1024


def _check_media_type(request: web.Request) -> None:
    """JSON in UTF-8, uncompressed: anything else is refused before a byte of it is read."""
    kind = request.content_type
    if kind not in _JSON_TYPES and not kind.endswith("+json"):
        declared = request.headers.get("Content-Type")
        raise UnsupportedMediaTypeError(
            f"the body must be JSON, sent with the header 'Content-Type: application/json' "
            f"(got {'no Content-Type' if declared is None else repr(declared[:60])})"
        )
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaTypeError(
            f"the body must be UTF-8 JSON, got charset {charset[:40]!r}; send charset=utf-8"
        )
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _IDENTITY:
        raise UnsupportedMediaTypeError(
            f"compressed bodies are not accepted (Content-Encoding {encoding[:40]!r}); send the "
            "JSON uncompressed"
        )


def too_large(limit: int) -> str:
    return (
        f"the request body is over the limit of {limit} bytes (--payload-limit); send fewer "
        "or shorter texts per request"
    )
