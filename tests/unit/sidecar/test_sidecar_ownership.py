"""Own-pod device resolution: kubelet pod-resources listing, handshake file, wire codec."""

from __future__ import annotations

import json

import pytest

from kuberank_sidecar.fake_nvml import FakeNvml, fake_uuid
from kuberank_sidecar.ownership import (
    ContainerDevices,
    DeviceClaim,
    HandshakeError,
    claim_from_handshake,
    claim_from_pod_resources,
    match_claim,
    parse_handshake,
)
from kuberank_sidecar.podresources_messages import (
    WireError,
    decode_list_response,
    encode_list_response,
)

A, B, C = (fake_uuid("h100x8", i) for i in range(3))
LISTING = [
    ContainerDevices("rr-0", "search", "inference", "nvidia.com/gpu", (A,)),
    ContainerDevices("rr-0", "search", "inference", "cpu-thing/other", ("x",)),
    ContainerDevices("other", "tenant-b", "main", "nvidia.com/gpu", (B,)),
    ContainerDevices("rr-0", "other-ns", "inference", "nvidia.com/gpu", (C,)),
]


def test_pod_resources_claim_holds_only_this_pods_gpus() -> None:
    claim = claim_from_pod_resources(LISTING, pod="rr-0", namespace="search")
    assert claim.device_ids == (A,)
    assert claim.sharing_known
    assert not claim.shared_ids
    assert claim.container_of(A) == "inference"


def test_sharing_is_detected_from_other_pods_and_time_slicing_replicas() -> None:
    listing = [*LISTING, ContainerDevices("peer", "search", "x", "nvidia.com/gpu", (A + "::1",))]
    assert claim_from_pod_resources(listing, pod="rr-0", namespace="search").shared_ids == {A}
    replica = [ContainerDevices("rr-0", "search", "inference", "nvidia.com/gpu", (B + "::0",))]
    claim = claim_from_pod_resources(replica, pod="rr-0", namespace="search")
    assert claim.device_ids == (B,)
    assert claim.shared_ids == {B}


def test_match_claim_never_invents_devices() -> None:
    fake = FakeNvml("h100x8")
    fake.open()
    owned, unknown = match_claim(
        DeviceClaim(device_ids=(A, "GPU-not-here", "7"), source="flag"), fake.discover()
    )
    assert [d.gpu.index for d in owned] == [0, 7]
    assert unknown == ["GPU-not-here"]


def test_mig_uuid_resolves_to_its_parent_gpu() -> None:
    fake = FakeNvml("a100-mig-1g.10gb")
    fake.open()
    tree = fake.discover()
    mig = tree.mig_devices[3]
    owned, _ = match_claim(DeviceClaim(device_ids=(mig.uuid,), source="handshake"), tree)
    assert owned[0].mig == mig
    assert owned[0].gpu == tree.gpus[0]


def test_handshake_round_trip_and_fallback_to_cuda_visible_devices() -> None:
    text = json.dumps(
        {
            "version": 1,
            "pid": 7,
            "device": "cuda",
            "cuda_visible_devices": "1,3",
            "uuids": [],
            "written_at": 1.0,
        }
    )
    assert claim_from_handshake(parse_handshake(text)).device_ids == ("1", "3")
    cpu = json.dumps(
        {
            "version": 1,
            "pid": 7,
            "device": "cpu",
            "cuda_visible_devices": None,
            "uuids": [],
            "written_at": 1.0,
        }
    )
    assert claim_from_handshake(parse_handshake(cpu)).device_ids == ()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ("{", "not JSON"),
        (json.dumps({"version": 2, "device": "cuda", "uuids": []}), "'version'"),
        (json.dumps({"version": 1, "device": "tpu", "uuids": []}), "'device'"),
        (json.dumps({"version": 1, "device": "cuda", "uuids": "GPU-x"}), "'uuids'"),
    ],
)
def test_bad_handshake_files_name_the_field(payload: str, field: str) -> None:
    with pytest.raises(HandshakeError, match=field):
        parse_handshake(payload)


def test_wire_codec_round_trips_and_skips_unknown_fields() -> None:
    data = encode_list_response(LISTING)
    assert decode_list_response(data) == LISTING
    # A newer kubelet adds fields: packed cpu_ids (3) in the container, a fixed64 and a varint.
    container = (
        b"\x0a\x01c"
        + b"\x1a\x02\x01\x02"
        + b"\x12"
        + bytes([len(b"\x0a\x0envidia.com/gpu\x12\x01x")])
        + b"\x0a\x0envidia.com/gpu\x12\x01x"
    )
    pod = (
        b"\x0a\x01p\x12\x01n"
        + b"\x1a"
        + bytes([len(container)])
        + container
        + b"\x21"
        + b"\x00" * 8
        + b"\x28\x05"
    )
    decoded = decode_list_response(b"\x0a" + bytes([len(pod)]) + pod)
    assert decoded == [ContainerDevices("p", "n", "c", "nvidia.com/gpu", ("x",))]


def test_wire_codec_rejects_truncated_messages() -> None:
    with pytest.raises(WireError):
        decode_list_response(encode_list_response(LISTING)[:-3])
