"""Host memory stays flat over 10,000 requests (after a warm-up): RSS and live Python objects.

The requests go through a plain ClientSession: aiohttp's TestClient keeps every response it has
seen, which would be the test's own leak."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import aiohttp
import psutil

from tests.integration.inference.conftest import Serve

WARM_UP = 1_000
TOTAL = 10_000
CONCURRENCY = 50
ALLOWED_RSS_GROWTH = 32 * 2**20
ALLOWED_OBJECT_GROWTH = 2_000


async def test_host_memory_stays_flat_over_10000_requests(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner, "--max-batch-tokens", "2048")
    url = str(client.make_url("/rerank"))
    process = psutil.Process()
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> None:
            body = {"query": "what is it", "texts": [f"document {index}", "another one"]}
            async with session.post(url, json=body) as response:
                assert response.status == 200
                await response.read()

        async def run(start: int, stop: int) -> None:
            for chunk in range(start, stop, CONCURRENCY):
                batch = range(chunk, min(stop, chunk + CONCURRENCY))
                await asyncio.gather(*(one(i) for i in batch))

        await run(0, WARM_UP)
        gc.collect()
        rss_before, objects_before = process.memory_info().rss, len(gc.get_objects())
        await run(WARM_UP, TOTAL)
        gc.collect()
        rss_after, objects_after = process.memory_info().rss, len(gc.get_objects())
    text = await (await client.get("/metrics")).text()
    assert f"kuberank_inference_pairs_total {2.0 * TOTAL}" in text
    assert objects_after - objects_before < ALLOWED_OBJECT_GROWTH, (objects_before, objects_after)
    growth = rss_after - rss_before
    assert growth < ALLOWED_RSS_GROWTH, f"RSS grew by {growth / 2**20:.1f} MiB"
