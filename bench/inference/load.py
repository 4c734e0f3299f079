"""HTTP load: closed loop (N clients back to back) and open loop (Poisson arrivals)."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import aiohttp


@dataclass(slots=True)
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    pairs: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        await r.read()
        return r.status, time.perf_counter() - started


async def closed_loop(
    url: str,
    bodies: list[bytes],
    *,
    pairs_per_request: int,
    concurrency: int,
    duration: float,
    warmup: float,
    processes: int = 1,
) -> LoadResult:
    """N clients back to back; with `processes` > 1 they are spread over that many processes
    (one event loop each), so that the load generator's own CPU never caps the figure."""
    processes = max(1, min(processes, concurrency))
    if processes > 1:
        return await _closed_loop_processes(
            url,
            bodies,
            pairs_per_request=pairs_per_request,
            concurrency=concurrency,
            duration=duration,
            warmup=warmup,
            processes=processes,
        )
    return await _closed_loop(
        url,
        bodies,
        pairs_per_request=pairs_per_request,
        concurrency=concurrency,
        duration=duration,
        warmup=warmup,
        offset=0,
        stride=concurrency,
    )


async def _closed_loop_processes(
    url: str,
    bodies: list[bytes],
    *,
    pairs_per_request: int,
    concurrency: int,
    duration: float,
    warmup: float,
    processes: int,
) -> LoadResult:
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    offsets = [sum(shares[:i]) for i in range(processes)]
    # spawn: the parent may hold CUDA or threads that a fork would copy half-alive
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.0 + 0.2 * processes  # every process starts its clients together
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool,
                    _closed_loop_in_process,
                    url,
                    bodies,
                    pairs_per_request,
                    share,
                    offset,
                    concurrency,
                    duration,
                    warmup,
                    start_at,
                )
                for share, offset in zip(shares, offsets, strict=True)
            )
        )
    merged = LoadResult(elapsed=duration)
    for part in parts:
        merged.latencies.extend(part.latencies)
        merged.pairs += part.pairs
        for status, count in part.errors.items():
            merged.errors[status] = merged.errors.get(status, 0) + count
    return merged


def _closed_loop_in_process(
    url: str,
    bodies: list[bytes],
    pairs_per_request: int,
    clients: int,
    offset: int,
    stride: int,
    duration: float,
    warmup: float,
    start_at: float,
) -> LoadResult:
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    return asyncio.run(
        _closed_loop(
            url,
            bodies,
            pairs_per_request=pairs_per_request,
            concurrency=clients,
            duration=duration,
            warmup=warmup,
            offset=offset,
            stride=stride,
        )
    )


async def _closed_loop(
    url: str,
    bodies: list[bytes],
    *,
    pairs_per_request: int,
    concurrency: int,
    duration: float,
    warmup: float,
    offset: int,
    stride: int,
) -> LoadResult:
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def client(index: int) -> None:
            n = offset + index
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                status, latency = await _post(session, url, bodies[n % len(bodies)])
                n += stride
                # count by completion time: steady-state throughput, whatever the latency
                done = sent + latency
                if done < measure_from or done > stop_at:
                    continue
                if status != 200:
                    result.errors[status] = result.errors.get(status, 0) + 1
                    continue
                result.latencies.append(latency)
                result.pairs += pairs_per_request

        await asyncio.gather(*(client(i) for i in range(concurrency)))
        result.elapsed = duration
    return result


async def open_loop(
    url: str,
    bodies: list[bytes],
    *,
    pairs_per_request: int,
    rate: float,
    duration: float,
    seed: int = 7,
) -> LoadResult:
    """Requests arrive as a Poisson process at `rate` per second, whatever the latency."""
    result = LoadResult()
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        start = time.perf_counter()
        next_at = start
        n = 0
        while next_at < start + duration:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_post(session, url, bodies[n % len(bodies)])))
            n += 1
            next_at += rng.expovariate(rate)
        for status, latency in await asyncio.gather(*tasks):
            if status != 200:
                result.errors[status] = result.errors.get(status, 0) + 1
                continue
            result.latencies.append(latency)
            result.pairs += pairs_per_request
        result.elapsed = time.perf_counter() - start
    return result
