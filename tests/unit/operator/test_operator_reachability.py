"""The operator's /readyz follows whether the Kubernetes API server answers its calls: the
decision on a fake clock, and the real client against loopback (a closed port, an HTTP server
that refuses)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import aiohttp
import kubernetes.client
import pytest
from prometheus_client import CollectorRegistry

from kuberank_operator.cluster.kubeapi import ApiError, KubeApi
from kuberank_operator.cluster.reachability import Reachability
from kuberank_operator.telemetry.serving import OpsServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_unanswered_calls_make_it_unready_only_after_the_grace() -> None:
    clock = Clock()
    reach = Reachability(unready_after_s=10.0, clock=clock)
    assert reach.problem() is None
    reach.unanswered("no answer from the API server: connection refused")
    clock.now += 9.0
    reach.unanswered("no answer from the API server: timed out")
    assert reach.problem() is None  # one dropped connection does not flap the probe
    clock.now += 2.0
    problem = reach.problem()
    assert problem is not None
    assert "has not answered for 11 s (2 calls)" in problem
    assert problem.endswith("last error: no answer from the API server: timed out")
    reach.answered()
    assert reach.problem() is None
    reach.unanswered("again")  # the grace starts over from the first failure after an answer
    clock.now += 5.0
    assert reach.problem() is None


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _api(host: str, reach: Reachability) -> KubeApi:
    config = kubernetes.client.Configuration()
    config.host = host
    config.retries = 0
    return KubeApi(kubernetes.client.ApiClient(config), threads=1, reachability=reach)


async def test_no_answer_is_an_api_error_of_status_0_and_counts_against_readiness() -> None:
    reach = Reachability(unready_after_s=0.0)
    api = _api(f"http://127.0.0.1:{_closed_port()}", reach)
    try:
        with pytest.raises(ApiError) as raised:  # not urllib3's own MaxRetryError
            await api.read_configmap(namespace="kuberank", name="admission")
    finally:
        api.close()
    assert raised.value.status == 0
    assert "no answer from the API server" in raised.value.message
    problem = reach.problem()
    assert problem is not None
    assert "(1 calls)" in problem


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"kind":"Status","message":"configmaps \\"admission\\" not found","code":404}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_refusal_is_an_answer(refusing_server: str) -> None:
    reach = Reachability(unready_after_s=0.0)
    reach.unanswered("earlier")
    api = _api(refusing_server, reach)
    try:
        assert await api.read_configmap(namespace="kuberank", name="admission") is None  # 404
    finally:
        api.close()
    assert reach.problem() is None


async def test_readyz_answers_503_with_the_reason_and_200_without() -> None:
    reason: list[str | None] = ["the Kubernetes API server has not answered for 12 s (3 calls)"]
    server = OpsServer(
        host="127.0.0.1",
        port=0,
        registry=CollectorRegistry(),
        healthy=lambda: True,
        unready_reason=lambda: reason[0],
    )
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.bound_port}/readyz"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 503
                assert (await response.json())["status"] == reason[0]
            reason[0] = None
            async with session.get(url) as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ready"
    finally:
        await server.stop()
