"""The tuning watch in one process: real sidecar-style /metrics servers on loopback pod IPs and
the operator's pod index; the cluster and a real sidecar are in tests/e2e."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from kuberank_operator.model.indexes import Index, World
from kuberank_operator.model.observations import PodSummary
from kuberank_operator.model.resources import Key, resource_view
from kuberank_operator.model.signals import PodTuning
from kuberank_operator.reconcile.tuningwatch import TuningWatch, TuningWatchOptions

TUNED: Key = ("search", "tuned")
PLAIN: Key = ("search", "plain")
IPS = {"tuned-a": "127.0.3.1", "tuned-b": "127.0.3.2", "plain-a": "127.0.3.3"}


def tuning_text(state: str, reason: str = "") -> str:
    return (
        "# TYPE kuberank_gpu_tuning_state gauge\n"
        f'kuberank_gpu_tuning_state{{gpu="0",state="{state}",reason="{reason}"}} 1\n'
    )


def rrd(name: str, *, power: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "search", "name": name, "uid": name, "generation": 1},
        "spec": {
            "model": {"id": "m", "source": {"hostPath": {"path": "/m"}}},
            "replicas": 2,
            "gpu": {"powerLimitWatts": power},
        },
        "status": {},
    }


def pod(name: str) -> PodSummary:
    return PodSummary(
        namespace="search",
        name=name,
        owner=name.split("-")[0],
        node_name="n",
        phase="Running",
        ready=True,
        deleting=False,
        gpu_requests=(("nvidia.com/gpu", 1),),
        ip=IPS[name],
    )


@dataclass
class Harness:
    watch: TuningWatch
    texts: dict[str, str]
    hits: dict[str, int]
    changed: list[Key]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    with socket.socket() as sock:
        sock.bind(("127.0.3.1", 0))
        port = int(sock.getsockname()[1])
    texts = {name: tuning_text("pending") for name in IPS}
    hits = dict.fromkeys(IPS, 0)
    runners = []
    for name, ip in IPS.items():

        async def metrics(_: web.Request, name: str = name) -> web.Response:
            hits[name] += 1
            return web.Response(text=texts[name])

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, ip, port).start()
        runners.append(runner)
    indices: dict[str, dict[Any, list[Any]]] = {
        Index.RRD: {
            TUNED: [resource_view(rrd("tuned", power=300))],
            PLAIN: [resource_view(rrd("plain", power=0))],
        },
        Index.POD: {TUNED: [pod("tuned-a"), pod("tuned-b")], PLAIN: [pod("plain-a")]},
    }
    changed: list[Key] = []
    watch = TuningWatch(
        world=World(indices),
        on_change=changed.append,
        options=TuningWatchOptions(
            unsettled_s=0.05, settled_s=0.05, tick_s=0.02, sidecar_port=port
        ),
    )
    yield Harness(watch=watch, texts=texts, hits=hits, changed=changed)
    await watch.stop()
    for runner in runners:
        await runner.cleanup()


async def test_observe_reports_changes_once_and_enqueues(harness: Harness) -> None:
    assert await harness.watch.observe(TUNED)
    assert harness.changed == [TUNED]
    assert harness.watch.states(TUNED) == {
        "tuned-a": PodTuning("pending"),
        "tuned-b": PodTuning("pending"),
    }
    assert not await harness.watch.observe(TUNED)
    assert harness.changed == [TUNED]
    harness.texts["tuned-b"] = tuning_text("denied", "no_permission")
    assert await harness.watch.observe(TUNED)
    states = harness.watch.states(TUNED)
    assert states is not None
    assert states["tuned-b"] == PodTuning("denied", "no_permission")


async def test_loop_watches_only_resources_that_ask_for_tuning(harness: Harness) -> None:
    harness.texts["tuned-a"] = tuning_text("applied")
    harness.texts["tuned-b"] = tuning_text("applied")
    await harness.watch.start()
    for _ in range(200):
        if harness.watch.states(TUNED) == {
            "tuned-a": PodTuning("applied"),
            "tuned-b": PodTuning("applied"),
        }:
            break
        await asyncio.sleep(0.02)
    assert harness.changed[-1] == TUNED
    assert harness.watch.states(TUNED) == {
        "tuned-a": PodTuning("applied"),
        "tuned-b": PodTuning("applied"),
    }
    assert harness.watch.states(PLAIN) is None
    assert harness.hits["plain-a"] == 0
    assert PLAIN not in harness.changed
