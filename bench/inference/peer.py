"""A peer engine on the benchmark's workload, in-process: Infinity (infinity-emb 0.0.78, its
torch engine) scoring the same 50-document requests from N concurrent asyncio clients, closed
loop, as bench_rerank drives the server over HTTP (no HTTP here: the peer gets that for free).

Infinity's wheel installs with --no-deps next to the GPU machine's torch (its pins, numpy < 2
among them, are not needed to run). On transformers 5 its warm-up fails, so it is switched off
(model_warmup=False); bettertransformer (optimum) is off too.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.inference.workload import RerankRequest


def infinity_peer(
    model_dir: Path,
    requests: list[RerankRequest],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    batch_size: int,
    dtype: str = "bfloat16",
    device: str = "cuda",
) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("INFINITY_ANONYMOUS_USAGE_STATS", "0")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import infinity_emb  # type: ignore[import-not-found, unused-ignore]
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    engine_args = EngineArgs(
        model_name_or_path=str(model_dir),
        engine="torch",
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        model_warmup=False,
        bettertransformer=False,
        compile=False,
    )
    started = time.perf_counter()
    engine = AsyncEmbeddingEngine.from_args(engine_args)
    loaded_s = time.perf_counter() - started

    async def run() -> dict[str, Any]:
        await engine.astart()
        try:
            first = requests[0]
            await engine.rerank(query=first.query, docs=first.documents, raw_scores=True)
            latencies: list[float] = []
            pairs = 0
            begin = time.perf_counter()
            measure_from = begin + warmup
            stop_at = measure_from + duration

            async def client(index: int) -> None:
                nonlocal pairs
                turn = index
                while time.perf_counter() < stop_at:
                    request = requests[turn % len(requests)]
                    turn += concurrency
                    t0 = time.perf_counter()
                    await engine.rerank(
                        query=request.query, docs=request.documents, raw_scores=True
                    )
                    t1 = time.perf_counter()
                    # counted by completion time, as load.closed_loop counts the server's
                    if measure_from <= t1 <= stop_at:
                        latencies.append(t1 - t0)
                        pairs += len(request.documents)

            await asyncio.gather(*(client(i) for i in range(concurrency)))
        finally:
            await engine.astop()
        ordered = sorted(latencies)
        return {
            "engine": f"infinity-emb {getattr(infinity_emb, '__version__', '?')} (torch)",
            "concurrency": concurrency,
            "batch_size": batch_size,
            "dtype": dtype,
            "load_s": loaded_s,
            "pairs_per_s": pairs / duration,
            "requests": len(latencies),
            "p50_s": statistics.median(ordered) if ordered else None,
            "p99_s": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else None,
        }

    result = asyncio.run(run())
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result
