"""The HTTP endpoints in one process (aiohttp test client), with real device resolution:
a handshake file, and kubelet's pod-resources API served by a real gRPC server on a unix socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from kuberank_sidecar.collection import ExportContext
from kuberank_sidecar.fake_nvml import FakeNvml, fake_uuid
from kuberank_sidecar.ownership import ContainerDevices
from kuberank_sidecar.podresources_messages import encode_list_response
from kuberank_sidecar.resolving import ResolverConfig
from kuberank_sidecar.runtime import Sidecar, SidecarConfig
from kuberank_sidecar.server import build_app
from kuberank_sidecar.tuning_plans import TuningRequest

UUIDS = [fake_uuid("h100x8", i) for i in range(8)]


def _config(
    tmp_path: Path, *, devices: str | None = None, tuning: TuningRequest | None = None
) -> SidecarConfig:
    return SidecarConfig(
        export=ExportContext(
            hostname="node-1", pod="rr-0", namespace="search", container="inference"
        ),
        resolver=ResolverConfig(
            devices_flag=devices,
            pod_resources_socket=tmp_path / "kubelet.sock",
            handshake_file=tmp_path / "device.json",
            pod_name="rr-0",
            pod_namespace="search",
        ),
        tuning=tuning or TuningRequest(),
        interval_s=0.2,
        tuning_journal=tmp_path / "journal.json",
    )


def _gpus_in(text: str) -> set[str]:
    return {
        s.labels["UUID"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if "UUID" in s.labels
    }


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[list[ContainerDevices]]:
    """A stand-in kubelet: the real gRPC stack answering pod-resources v1 List on a unix socket."""
    listing: list[ContainerDevices] = []

    def list_handler(_request: bytes, _context: object) -> bytes:
        return encode_list_response(listing)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "v1.PodResourcesLister", {"List": grpc.unary_unary_rpc_method_handler(list_handler)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix://{tmp_path / 'kubelet.sock'}")
    server.start()
    yield listing
    server.stop(None).wait()


async def test_handshake_file_limits_export_to_the_pods_gpu(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    (tmp_path / "device.json").write_text(
        json.dumps(
            {
                "version": 1,
                "pid": 1,
                "device": "cuda",
                "cuda_visible_devices": "0",
                "uuids": [UUIDS[5]],
                "written_at": 0.0,
            }
        )
    )
    sidecar = Sidecar(_config(tmp_path), FakeNvml("h100x8"))
    client: TestClient[web.Request, web.Application] = await aiohttp_client(build_app(sidecar))
    reply = await client.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await reply.text()
    assert _gpus_in(text) == {UUIDS[5]}
    assert 'source="handshake"' in text
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok"
    assert health["devices"] == [{"uuid": UUIDS[5], "error": None}]
    tuning = await (await client.get("/tuning")).json()
    assert tuning["state"] == "disabled"


async def test_no_claim_means_no_gpu_is_exported(tmp_path: Path, aiohttp_client: Any) -> None:
    sidecar = Sidecar(_config(tmp_path), FakeNvml("h100x8"))
    client: TestClient[web.Request, web.Application] = await aiohttp_client(build_app(sidecar))
    text = await (await client.get("/metrics")).text()
    assert _gpus_in(text) == set()
    owned = (
        'kuberank_gpu_owned_devices{Hostname="node-1",namespace="search",pod="rr-0",source="none"}'
    )
    assert f"{owned} 0" in text


async def test_pod_resources_socket_wins_and_sharing_refuses_tuning(
    tmp_path: Path,
    kubelet: list[ContainerDevices],
    aiohttp_client: Any,
) -> None:
    kubelet.extend(
        [
            ContainerDevices("rr-0", "search", "inference", "nvidia.com/gpu", (UUIDS[1], UUIDS[2])),
            ContainerDevices("noisy", "tenant-b", "main", "nvidia.com/gpu", (UUIDS[2],)),
            ContainerDevices("noisy", "tenant-b", "main", "nvidia.com/gpu", (UUIDS[3],)),
        ]
    )
    # A stale handshake naming another GPU must lose to kubelet's answer.
    (tmp_path / "device.json").write_text(
        json.dumps(
            {
                "version": 1,
                "pid": 1,
                "device": "cuda",
                "cuda_visible_devices": None,
                "uuids": [UUIDS[7]],
                "written_at": 0.0,
            }
        )
    )
    fake = FakeNvml("h100x8")
    sidecar = Sidecar(_config(tmp_path, tuning=TuningRequest(power_limit_w=500.0)), fake)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(build_app(sidecar))
    text = await (await client.get("/metrics")).text()
    assert _gpus_in(text) == {UUIDS[1], UUIDS[2]}
    states = {
        s.labels["UUID"]: (s.labels["state"], s.labels["reason"])
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "kuberank_gpu_tuning_state"
    }
    assert states == {UUIDS[1]: ("applied", ""), UUIDS[2]: ("refused", "shared_gpu")}
    containers = {
        s.labels["container"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "DCGM_FI_DEV_FB_USED"
    }
    assert containers == {"inference"}
    report = await (await client.get("/tuning")).json()
    assert report["state"] == "refused"
    gpu1 = fake.discover().gpus[1]
    assert fake.settings_of(gpu1)["power_limit_w"] == 500.0
    assert fake.settings_of(fake.discover().gpus[2])["power_limit_w"] == 700.0
    await client.close()
    # The app's cleanup restored the GPU it tuned.
    assert fake.settings_of(gpu1)["power_limit_w"] == 700.0
    assert not (tmp_path / "journal.json").exists()
