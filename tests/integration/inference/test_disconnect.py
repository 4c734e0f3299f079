"""A client that disconnects has its waiting pairs dropped (aiohttp cancels its handler)."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest

from tests.integration.inference.conftest import Serve
from tests.unit.inference.fakes import ServableFakeRunner


async def test_pairs_of_a_client_that_disconnects_are_dropped(serve: Serve) -> None:
    runner = ServableFakeRunner()
    client = await serve(runner, "--max-batch-requests", "2")
    runner.gate.clear()  # the device holds the first batch
    first = asyncio.create_task(client.post("/rerank", json={"query": "q", "texts": ["a"]}))
    await asyncio.to_thread(runner.started.wait, 10)
    texts = [f"z{i}" for i in range(20)]
    with pytest.raises(asyncio.TimeoutError):
        await client.post(
            "/rerank",
            json={"query": "q", "texts": texts},
            timeout=aiohttp.ClientTimeout(total=0.5),
        )
    dropped = 0.0
    for _ in range(200):
        metrics = await (await client.get("/metrics")).text()
        line = next(m for m in metrics.splitlines() if m.startswith("kuberank_inference_dropped"))
        dropped = float(line.split()[-1])
        if dropped:
            break
        await asyncio.sleep(0.025)
    runner.gate.set()
    assert (await first).status == 200
    ran = [t for batch in runner.batches for t in batch if t.startswith("z")]
    # at most one batch of the leaving client was already on the device; the rest never ran
    assert dropped == 20 - len(ran)
    assert len(ran) <= 2
    in_flight = await (await client.get("/metrics")).text()
    assert "kuberank_inference_pairs_in_flight 0.0" in in_flight


async def test_tokenization_of_a_client_that_left_stops(serve: Serve) -> None:
    runner = ServableFakeRunner(encode_gate=threading.Event())
    client = await serve(runner)
    with pytest.raises(asyncio.TimeoutError):
        await client.post(
            "/rerank",
            json={"query": "q", "texts": ["a", "b"]},
            timeout=aiohttp.ClientTimeout(total=0.5),
        )
    # the slow tokenizer was told the client left, and gave up without finishing
    assert await asyncio.to_thread(runner.abandoned_seen.wait, 10)
    assert runner.encoding.is_set()
    assert not runner.batches
    runner.encode_gate = None
    assert (await client.post("/rerank", json={"query": "q", "texts": ["a"]})).status == 200
