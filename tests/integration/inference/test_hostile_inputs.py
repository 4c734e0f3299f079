"""Malformed and hostile bodies on every API route of the real app (CPU models): each gets a 4xx
with TEI's JSON error shape `{"error", "error_type"}`, never a 500 or a traceback, and the
server goes on serving."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.integration.inference.conftest import Serve

JSON = {"Content-Type": "application/json"}
LIMIT = 2_000_000  # the default --payload-limit
MAX_DOCS = 1000  # the default --max-client-batch-size
HUGE_QUERY = "word " * 380_000  # about 1.9 MB
DEEP = "[" * 100_000


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str
    body: bytes
    status: int
    error_type: str
    message: str
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    skip_headers: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


def _case(name: str, path: str, body: bytes | Any, status: int, kind: str, msg: str) -> Hostile:
    raw = body if isinstance(body, bytes) else _json(body)
    return Hostile(name, path, raw, status, kind, msg)


V = "Validation"
CASES = [
    # --- JSON that Python's decoder would choke on, or accept although it is not JSON ---------
    _case("deep-array", "/rerank", DEEP.encode(), 400, V, "nests arrays or objects too deeply"),
    _case(
        "deep-in-field",
        "/v1/rerank",
        b'{"query": "q", "documents": ' + DEEP.encode() + b"}",
        400,
        V,
        "too deeply",
    ),
    _case("deep-objects", "/embed", b'{"a":' * 50_000, 400, V, "too deeply"),
    _case(
        "int-5000-digits",
        "/v2/rerank",
        b'{"query": "q", "documents": ["a"], "top_n": ' + b"9" * 5000 + b"}",
        422,
        V,
        "value has 5000 digits",
    ),
    _case(
        "int-5000-digits-unknown-field",
        "/rerank",
        b'{"query": "q", "texts": ["a"], "x": -' + b"1" * 5000 + b"}",
        422,
        V,
        "value has 5000 digits",
    ),
    _case(
        "lone-surrogate-query",
        "/rerank",
        b'{"query": "\\ud800", "texts": ["a"]}',
        422,
        V,
        "`query` holds a lone UTF-16 surrogate",
    ),
    _case(
        "lone-surrogate-text",
        "/rerank",
        b'{"query": "q", "texts": ["a", "x\\udfff"]}',
        422,
        V,
        "`texts[1]` holds a lone UTF-16 surrogate",
    ),
    _case(
        "lone-surrogate-document-object",
        "/v1/rerank",
        b'{"query": "q", "documents": [{"text": "\\udc00"}]}',
        422,
        V,
        "`documents[0].text`",
    ),
    _case("lone-surrogate-embed", "/embed", b'{"inputs": ["\\ud83d"]}', 422, V, "`inputs[0]`"),
    _case("invalid-utf8", "/rerank", b'{"query": "\xff\xfe", "texts": ["a"]}', 400, V, "not UTF-8"),
    _case("utf16-body", "/rerank", '{"query": "q"}'.encode("utf-16"), 400, V, "not UTF-8"),
    _case(
        "nan",
        "/v2/rerank",
        b'{"query": "q", "documents": ["a"], "top_n": NaN}',
        400,
        V,
        "NaN is not a JSON value",
    ),
    _case(
        "infinity",
        "/rerank",
        b'{"query": "q", "texts": ["a"], "x": Infinity}',
        400,
        V,
        "Infinity is not a JSON value",
    ),
    _case(
        "minus-infinity", "/embed", b'{"inputs": "a", "dimensions": -Infinity}', 400, V, "-Infinity"
    ),
    _case(
        "float-overflow",
        "/v1/rerank",
        b'{"query": "q", "documents": ["a"], "top_n": 1e999}',
        422,
        V,
        "`top_n` must be an integer",
    ),
    _case(
        "duplicate-keys",
        "/rerank",
        b'{"query": "q", "query": "r", "texts": ["a"]}',
        422,
        V,
        "'query' appears twice",
    ),
    _case("not-json", "/rerank", b"{not json", 400, V, "not valid JSON"),
    _case(
        "bom", "/rerank", b'\xef\xbb\xbf{"query": "q", "texts": ["a"]}', 400, V, "not valid JSON"
    ),
    _case("empty-body", "/v1/rerank", b"", 400, V, "body is empty"),
    _case("top-level-array", "/rerank", [1, 2], 400, V, "must be a JSON object, got an array"),
    _case("top-level-null", "/v1/embeddings", None, 400, V, "got null"),
    _case("top-level-string", "/embed", "inputs", 400, V, "got a string"),
    # --- wrong types, nulls, missing and empty fields -----------------------------------------
    _case(
        "query-number", "/rerank", {"query": 1, "texts": ["a"]}, 422, V, "`query` must be a string"
    ),
    _case("query-null", "/v2/rerank", {"query": None, "documents": ["a"]}, 422, V, "got null"),
    _case("query-object", "/rerank", {"query": {"a": 1}, "texts": ["a"]}, 422, V, "got an object"),
    _case("query-bool", "/v1/rerank", {"query": True, "documents": ["a"]}, 422, V, "got a boolean"),
    _case("query-missing", "/rerank", {"texts": ["a"]}, 422, V, "`query` is required"),
    _case("texts-missing", "/rerank", {"query": "q"}, 422, V, "`texts` is required"),
    _case("texts-string", "/rerank", {"query": "q", "texts": "a"}, 422, V, "must be an array"),
    _case("texts-null", "/rerank", {"query": "q", "texts": None}, 422, V, "got null"),
    _case("texts-numbers", "/rerank", {"query": "q", "texts": [1, 2]}, 422, V, "`texts[0]`"),
    _case("texts-objects", "/rerank", {"query": "q", "texts": [{"text": "a"}]}, 422, V, "texts[0]"),
    _case("texts-null-item", "/rerank", {"query": "q", "texts": ["a", None]}, 422, V, "texts[1]"),
    _case("texts-empty", "/rerank", {"query": "q", "texts": []}, 400, "Empty", "`texts` is empty"),
    _case("documents-empty", "/v2/rerank", {"query": "q", "documents": []}, 400, "Empty", "empty"),
    _case("documents-missing", "/v1/rerank", {"query": "q"}, 422, V, "`documents` is required"),
    _case(
        "document-text-number",
        "/v1/rerank",
        {"query": "q", "documents": [{"text": 1}]},
        422,
        V,
        "`documents[0]`",
    ),
    _case(
        "document-empty-object",
        "/v2/rerank",
        {"query": "q", "documents": [{}]},
        422,
        V,
        "documents[0]",
    ),
    _case(
        "model-number",
        "/v2/rerank",
        {"query": "q", "documents": ["a"], "model": 5},
        422,
        V,
        "`model` must be a string",
    ),
    # --- booleans where integers are expected (True is an int in Python), and the reverse ------
    _case(
        "top_n-true",
        "/v2/rerank",
        {"query": "q", "documents": ["a"], "top_n": True},
        422,
        V,
        "`top_n` must be an integer",
    ),
    _case(
        "top_n-zero", "/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 422, V, "got 0"
    ),
    _case(
        "top_n-negative",
        "/v1/rerank",
        {"query": "q", "documents": ["a"], "top_n": -3},
        422,
        V,
        "got -3",
    ),
    _case(
        "top_n-string",
        "/v1/rerank",
        {"query": "q", "documents": ["a"], "top_n": "2"},
        422,
        V,
        "got a string",
    ),
    _case(
        "top_n-float",
        "/v1/rerank",
        {"query": "q", "documents": ["a"], "top_n": 1.5},
        422,
        V,
        "got a number",
    ),
    _case(
        "max_tokens_per_doc-false",
        "/v2/rerank",
        {"query": "q", "documents": ["a"], "max_tokens_per_doc": False},
        422,
        V,
        "`max_tokens_per_doc`",
    ),
    _case(
        "max_tokens_per_doc-zero",
        "/v2/rerank",
        {"query": "q", "documents": ["a"], "max_tokens_per_doc": 0},
        422,
        V,
        "got 0",
    ),
    _case(
        "max_tokens_per_doc-negative",
        "/v1/rerank",
        {"query": "q", "documents": ["a"], "max_tokens_per_doc": -1},
        422,
        V,
        "got -1",
    ),
    _case(
        "truncate-int",
        "/rerank",
        {"query": "q", "texts": ["a"], "truncate": 1},
        422,
        V,
        "`truncate` must be true or false, got a number",
    ),
    _case(
        "raw_scores-string",
        "/rerank",
        {"query": "q", "texts": ["a"], "raw_scores": "yes"},
        422,
        V,
        "`raw_scores`",
    ),
    _case(
        "return_documents-string",
        "/v1/rerank",
        {"query": "q", "documents": ["a"], "return_documents": "true"},
        422,
        V,
        "`return_documents`",
    ),
    _case(
        "direction-unknown",
        "/rerank",
        {"query": "q", "texts": ["a"], "truncation_direction": "Up" * 10_000},
        422,
        V,
        "`truncation_direction`",
    ),
    # --- embeddings --------------------------------------------------------------------------
    _case("inputs-empty", "/embed", {"inputs": []}, 400, "Empty", "`inputs` is empty"),
    _case("inputs-number", "/embed", {"inputs": 5}, 422, V, "`inputs` must be an array"),
    _case("inputs-token-ids", "/embed", {"inputs": [1, 2]}, 422, V, "token ids"),
    _case("inputs-nested", "/embed", {"inputs": [["a"]]}, 422, V, "`inputs[0]`"),
    _case("dimensions-true", "/embed", {"inputs": "a", "dimensions": True}, 422, V, "`dimensions`"),
    _case(
        "dimensions-huge",
        "/embed",
        {"inputs": "a", "dimensions": 10**17},
        422,
        V,
        "embeddings have 384 dimensions",
    ),
    _case("normalize-string", "/embed", {"inputs": "a", "normalize": "no"}, 422, V, "`normalize`"),
    _case("input-null", "/v1/embeddings", {"input": None}, 422, V, "`input`"),
    _case("input-missing", "/v1/embeddings", {"model": "m"}, 422, V, "`input` is required"),
    _case(
        "encoding-unknown",
        "/v1/embeddings",
        {"input": "a", "encoding_format": "hex"},
        422,
        V,
        "`encoding_format`",
    ),
    # --- limits: documents, bytes, tokens -----------------------------------------------------
    _case(
        "too-many-texts",
        "/rerank",
        {"query": "q", "texts": ["a"] * (MAX_DOCS + 1)},
        413,
        V,
        f"at most {MAX_DOCS}",
    ),
    _case(
        "too-many-documents",
        "/v2/rerank",
        {"query": "q", "documents": ["a"] * (MAX_DOCS + 1)},
        413,
        V,
        "--max-client-batch-size",
    ),
    _case(
        "too-many-inputs", "/v1/embeddings", {"input": ["a"] * (MAX_DOCS + 1)}, 413, V, "at most"
    ),
    _case(
        "over-byte-limit",
        "/rerank",
        {"query": "q", "texts": ["x" * LIMIT]},
        413,
        V,
        f"over the limit of {LIMIT} bytes",
    ),
    _case(
        "huge-query-1000-docs",
        "/rerank",
        {"query": HUGE_QUERY, "texts": ["a"] * MAX_DOCS},
        422,
        V,
        "query is at least",
    ),
    _case(
        "huge-text",
        "/rerank",
        {"query": "q", "texts": ["a", HUGE_QUERY]},
        422,
        V,
        "texts[1] is at least",
    ),
    _case(
        "huge-embed-input", "/embed", {"inputs": ["a", HUGE_QUERY]}, 422, V, "inputs[1] is at least"
    ),
]


def _with_headers(case: Hostile, headers: dict[str, str], *skip: str) -> Hostile:
    return Hostile(
        case.name, case.path, case.body, case.status, case.error_type, case.message, headers, skip
    )


GOOD = _json({"query": "q", "texts": ["a"]})
MEDIA = [
    _with_headers(
        Hostile("text-plain", "/rerank", GOOD, 415, V, "Content-Type: application/json"),
        {"Content-Type": "text/plain"},
    ),
    _with_headers(
        Hostile("no-content-type", "/v1/rerank", GOOD, 415, V, "no Content-Type"),
        {},
        "Content-Type",
    ),
    _with_headers(
        Hostile("form", "/embed", b"inputs=a", 415, V, "application/x-www-form-urlencoded"),
        {"Content-Type": "application/x-www-form-urlencoded"},
    ),
    _with_headers(
        Hostile("latin-1", "/rerank", GOOD, 415, V, "charset 'latin-1'"),
        {"Content-Type": "application/json; charset=latin-1"},
    ),
    _with_headers(
        Hostile(
            "gzip-bomb", "/rerank", gzip.compress(b" " * 50_000_000), 415, V, "Content-Encoding"
        ),
        {**JSON, "Content-Encoding": "gzip"},
    ),
    _with_headers(
        Hostile("deflate", "/v2/rerank", zlib.compress(GOOD), 415, V, "'deflate'"),
        {**JSON, "Content-Encoding": "deflate"},
    ),
]


def _assert_tei_error(status: int, headers: Any, answer: Any, case: Hostile) -> None:
    assert status == case.status, (case.name, answer)
    assert headers["Content-Type"].startswith("application/json"), case.name
    assert set(answer) == {"error", "error_type"}, answer
    assert answer["error_type"] == case.error_type
    assert case.message in answer["error"], answer["error"]
    assert "Traceback" not in answer["error"]
    assert len(answer["error"]) < 400, "an error message must not echo the body"


@pytest.fixture
async def servers(serve: Serve, cross_runner: Any, minilm_runner: Any) -> dict[str, Any]:
    """A reranker for the rerank routes and an embedding model for the embedding routes."""
    return {"rerank": await serve(cross_runner), "embed": await serve(minilm_runner)}


def _server_for(servers: dict[str, Any], path: str) -> Any:
    return servers["embed" if path in ("/embed", "/v1/embeddings") else "rerank"]


@pytest.mark.parametrize("case", CASES + MEDIA, ids=str)
async def test_hostile_body_gets_a_tei_error(servers: dict[str, Any], case: Hostile) -> None:
    client = _server_for(servers, case.path)
    response = await client.post(
        case.path,
        data=io.BytesIO(case.body),
        headers=case.headers,
        skip_auto_headers=case.skip_headers,
    )
    _assert_tei_error(response.status, response.headers, await response.json(), case)


async def test_chunked_body_over_the_limit_is_cut_off(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner, "--payload-limit", "65536")
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"query": "q", "texts": ["'
        for _ in range(10_000):  # 10 MB, no Content-Length: the server stops reading at 64 KiB
            sent += 1
            yield b"x" * 1024
        yield b'"]}'

    response = await client.post("/rerank", data=chunks(), headers=JSON)
    case = Hostile("chunked", "/rerank", b"", 413, V, "over the limit of 65536 bytes")
    _assert_tei_error(response.status, response.headers, await response.json(), case)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/nowhere", 404), ("GET", "/rerank", 405), ("POST", "/health", 405)],
)
async def test_other_routes_answer_json(
    serve: Serve, cross_runner: Any, method: str, path: str, status: int
) -> None:
    client = await serve(cross_runner)
    response = await client.request(method, path, data=b"[[[", headers=JSON)
    assert response.status == status
    assert set(await response.json()) == {"error", "error_type"}


async def test_cohere_truncates_a_huge_query_once(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner)
    docs = [f"doc {i}" for i in range(MAX_DOCS)]
    body = _json({"query": HUGE_QUERY, "documents": docs})
    response = await client.post("/v2/rerank", data=io.BytesIO(body), headers=JSON)
    assert response.status == 200
    assert len((await response.json())["results"]) == MAX_DOCS


async def test_the_server_serves_on_after_every_hostile_body(
    servers: dict[str, Any],
) -> None:
    for case in CASES + MEDIA:
        client = _server_for(servers, case.path)
        response = await client.post(
            case.path,
            data=io.BytesIO(case.body),
            headers=case.headers,
            skip_auto_headers=case.skip_headers,
        )
        assert 400 <= response.status < 500, case.name
        await response.read()
    for client in servers.values():
        text = await (await client.get("/metrics")).text()
        answered = [line for line in text.splitlines() if "requests_total{" in line]
        assert not [line for line in answered if 'status="5' in line and "/ready" not in line]
    ranked = await servers["rerank"].post("/rerank", json={"query": "q", "texts": ["a", "b"]})
    assert ranked.status == 200
    embedded = await servers["embed"].post("/embed", json={"inputs": ["a"]})
    assert embedded.status == 200
