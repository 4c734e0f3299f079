"""The pod scraper against real HTTP servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from kuberank_operator.cluster.scraping import PodTarget, metrics_url, new_session, scrape_pod

INFERENCE = """\
# TYPE kuberank_inference_queue_depth gauge
kuberank_inference_queue_depth 12
# TYPE kuberank_cuda_oom_total counter
kuberank_cuda_oom_total 1
"""
SIDECAR = """\
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0"} 42
"""


async def _serve(body: str, status: int = 200) -> web.AppRunner:
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text=body, status=status)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@pytest.fixture
async def servers() -> AsyncIterator[tuple[int, int, int]]:
    runners = [await _serve(INFERENCE), await _serve(SIDECAR), await _serve("x", status=500)]
    ports = tuple(int(r.addresses[0][1]) for r in runners)
    yield ports[0], ports[1], ports[2]
    for runner in runners:
        await runner.cleanup()


async def test_scrape_reads_both_endpoints(servers: tuple[int, int, int]) -> None:
    inference_port, sidecar_port, _ = servers
    async with new_session(timeout_s=2) as session:
        scrape = await scrape_pod(
            session,
            PodTarget(pod="p", ip="127.0.0.1"),
            taken_at=5.0,
            inference_port=inference_port,
            sidecar_port=sidecar_port,
        )
    assert scrape.pod == "p"
    assert scrape.taken_at == 5.0
    assert scrape.inference is not None
    assert scrape.inference.queue_depth == 12
    assert scrape.gpu is not None
    assert scrape.gpu.utilization_percent == 42


async def test_failing_endpoints_read_as_unknown(servers: tuple[int, int, int]) -> None:
    inference_port, _, broken_port = servers
    async with new_session(timeout_s=2) as session:
        scrape = await scrape_pod(
            session,
            PodTarget(pod="p", ip="127.0.0.1"),
            taken_at=0.0,
            inference_port=broken_port,
            sidecar_port=1,  # nothing listens on port 1
        )
        no_sidecar = await scrape_pod(
            session,
            PodTarget(pod="p", ip="127.0.0.1", sidecar=False),
            taken_at=0.0,
            inference_port=inference_port,
        )
    assert scrape.inference is None
    assert scrape.gpu is None
    assert no_sidecar.inference is not None
    assert no_sidecar.gpu is None


def test_ipv6_urls_are_bracketed() -> None:
    assert metrics_url("::1", 8080) == "http://[::1]:8080/metrics"
    assert metrics_url("127.0.0.5", 9400) == "http://127.0.0.5:9400/metrics"
