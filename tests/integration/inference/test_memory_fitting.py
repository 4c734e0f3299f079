"""The app fits its token budget into a (fake) device at start-up: /ready, /info and the metrics
say which budget is in force and why; a device too full for one sequence fails with a message."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from kuberank_inference.app import FATAL, STATE, create_app
from kuberank_inference.config import parse_config
from kuberank_inference.engine.contracts import DeviceMemory
from kuberank_inference.failures import DeviceOutOfMemoryError
from tests.integration.inference.conftest import Serve
from tests.unit.inference.fakes import ServableFakeRunner

GIB = 2**30


@dataclass
class FullDevice(ServableFakeRunner):
    """A fake GPU of 80 GiB that others fill: `free` left, warm-ups over `fits_tokens` fail."""

    free: int = 3 * GIB
    fits_tokens: int = 1 << 30

    def device_memory(self) -> DeviceMemory | None:
        return DeviceMemory(total=80 * GIB, allocated=GIB, reserved=GIB, peak_allocated=GIB)

    def free_device_bytes(self) -> int | None:
        return self.free

    def resident_bytes(self) -> int:
        return GIB

    def activation_bytes_per_token(self, *, tokens: int) -> float:
        return 10_000.0

    def warm_up(self, *, max_batch_tokens: int) -> None:
        if max_batch_tokens > self.fits_tokens:
            raise DeviceOutOfMemoryError(tokens=max_batch_tokens, detail="CUDA out of memory")


async def test_ready_info_and_metrics_name_the_lowered_budget(serve: Serve) -> None:
    # 3 GiB free plans 3 GiB / (10 kB * 2 in flight) = 161,061 tokens, capped at 65,536; the
    # warm-up fits only 20,000: halved twice
    runner = FullDevice(fits_tokens=20_000)
    client = await serve(runner, "--max-batch-tokens", "65536")
    ready = await (await client.get("/ready")).json()
    assert ready["status"] == "ready"
    assert ready["token_budget"] == 16384
    assert ready["token_budget_configured"] == 65536
    assert ready["token_budget_reason"] == "warm_up_oom"
    assert ready["device_free_bytes_at_start"] == 3 * GIB
    info = await (await client.get("/info")).json()
    assert info["token_budget"] == 16384
    assert info["token_budget_reason"] == "warm_up_oom"
    text = await (await client.get("/metrics")).text()
    assert "kuberank_inference_token_budget 16384.0" in text
    assert "kuberank_inference_token_budget_ceiling 16384.0" in text
    assert 'kuberank_inference_token_budget_reason{reason="warm_up_oom"} 1.0' in text
    assert "kuberank_inference_device_free_at_start_bytes 3.221225472e+09" in text
    assert (await client.post("/rerank", json={"query": "q", "texts": ["a"]})).status == 200


async def test_free_memory_is_the_reason_when_it_caps(serve: Serve) -> None:
    client = await serve(FullDevice(free=GIB // 4), "--max-batch-tokens", "65536")
    ready = await (await client.get("/ready")).json()
    assert ready["token_budget"] == GIB // 4 // 20_000
    assert ready["token_budget_reason"] == "free_memory"


async def test_no_room_for_one_sequence_fails_start_up_with_the_figures(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], tmp_path: Path
) -> None:
    runner = FullDevice(free=GIB // 2, fits_tokens=10)
    config = parse_config(["--device-handshake-file", str(tmp_path / "d.json")], environ={})
    app = create_app(config, load_model=lambda: runner)
    client = await aiohttp_client(app)
    await asyncio.wait_for(app[FATAL].wait(), timeout=30)
    failure = app[STATE].failure or ""
    assert "not enough device memory for even one sequence of 64 tokens" in failure
    assert "0.50 GiB was free at start-up" in failure
    response = await client.get("/ready")
    assert response.status == 503
    assert "0.50 GiB was free" in (await response.json())["error"]
