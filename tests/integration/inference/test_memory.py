"""Host memory stays flat over 10,000 requests (after a warm-up), measured as RSS."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import psutil

from tests.integration.inference.conftest import Serve

WARM_UP = 1_000
TOTAL = 10_000
CONCURRENCY = 50
ALLOWED_GROWTH = 48 * 2**20


async def test_host_memory_stays_flat_over_10000_requests(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner, "--max-batch-tokens", "2048")
    process = psutil.Process()

    async def one(index: int) -> None:
        body = {"query": "what is it", "texts": [f"document {index}", "another one"]}
        async with client.post("/rerank", json=body) as response:
            assert response.status == 200
            await response.read()

    async def run(start: int, stop: int) -> None:
        for chunk in range(start, stop, CONCURRENCY):
            await asyncio.gather(*(one(i) for i in range(chunk, min(stop, chunk + CONCURRENCY))))

    await run(0, WARM_UP)
    gc.collect()
    before = process.memory_info().rss
    await run(WARM_UP, TOTAL)
    gc.collect()
    after = process.memory_info().rss
    text = await (await client.get("/metrics")).text()
    assert f"kuberank_inference_pairs_total {2.0 * TOTAL}" in text
    assert after - before < ALLOWED_GROWTH, f"RSS grew by {(after - before) / 2**20:.1f} MiB"
