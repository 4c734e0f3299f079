"""Which GPU or MIG devices belong to this pod: pure decisions over what kubelet or the
inference container said. The sidecar never exports a device that is not in the claim."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kuberank_sidecar.devices import DeviceTree, GpuIdentity, MigIdentity
from kuberank_sidecar.records import OwnedDevice

GPU_RESOURCE_PREFIX = "nvidia.com/"


@dataclass(frozen=True)
class ContainerDevices:
    """One container's devices of one resource, as the kubelet pod-resources API lists them."""

    pod: str
    namespace: str
    container: str
    resource_name: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True)
class DeviceClaim:
    """The devices this pod was given, where that came from, and who else holds them."""

    device_ids: tuple[str, ...]
    source: str
    # Physical device ids (GPU-… or MIG-…) that another pod holds too.
    shared_ids: frozenset[str] = frozenset()
    # False when the source cannot tell whether another pod shares the GPU (handshake file).
    sharing_known: bool = False
    containers: tuple[tuple[str, str], ...] = ()

    def container_of(self, device_id: str) -> str:
        for claimed, container in self.containers:
            if claimed == device_id:
                return container
        return ""


@dataclass(frozen=True)
class Handshake:
    """The device handshake file the inference container writes (contract version 1)."""

    pid: int
    device: str
    cuda_visible_devices: str | None
    uuids: tuple[str, ...]
    written_at: float


class HandshakeError(ValueError):
    """The handshake file is malformed; the message names the field and the fix."""


def physical_id(device_id: str) -> str:
    """The device behind a time-slicing replica id ("GPU-abc::3" → "GPU-abc")."""
    return device_id.split("::", 1)[0]


def claim_from_pod_resources(
    listing: Iterable[ContainerDevices], *, pod: str, namespace: str
) -> DeviceClaim:
    """Our pod's NVIDIA devices; a device is shared when another pod lists it, or when it is a
    time-slicing replica (the device plugin hands the same GPU to several pods)."""
    ours: list[tuple[str, str]] = []
    others: set[str] = set()
    for entry in listing:
        if not entry.resource_name.startswith(GPU_RESOURCE_PREFIX):
            continue
        if entry.pod == pod and entry.namespace == namespace:
            ours.extend((device_id, entry.container) for device_id in entry.device_ids)
        else:
            others.update(physical_id(d) for d in entry.device_ids)
    shared = {physical_id(d) for d, _ in ours if physical_id(d) in others or "::" in d}
    ids = tuple(dict.fromkeys(physical_id(d) for d, _ in ours))
    return DeviceClaim(
        device_ids=ids,
        source="pod-resources",
        shared_ids=frozenset(shared),
        sharing_known=True,
        containers=tuple((physical_id(d), c) for d, c in ours),
    )


def parse_handshake(text: str) -> Handshake:
    """Parse and check the handshake JSON; errors name the field that is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HandshakeError(f"handshake file is not JSON ({exc}); rewrite it atomically") from exc
    if not isinstance(data, dict):
        raise HandshakeError("handshake file must hold a JSON object")
    if data.get("version") != 1:
        raise HandshakeError(
            f"handshake field 'version' is {data.get('version')!r}; this sidecar reads version 1"
        )
    uuids = data.get("uuids", [])
    if not isinstance(uuids, list) or not all(isinstance(u, str) for u in uuids):
        raise HandshakeError("handshake field 'uuids' must be a list of GPU-…/MIG-… strings")
    device = data.get("device")
    if device not in ("cpu", "cuda"):
        raise HandshakeError(f"handshake field 'device' is {device!r}; expected 'cpu' or 'cuda'")
    visible = data.get("cuda_visible_devices")
    if visible is not None and not isinstance(visible, str):
        raise HandshakeError("handshake field 'cuda_visible_devices' must be a string or null")
    return Handshake(
        pid=int(data.get("pid", 0)),
        device=str(device),
        cuda_visible_devices=visible,
        uuids=tuple(uuids),
        written_at=float(data.get("written_at", 0.0)),
    )


def claim_from_handshake(handshake: Handshake) -> DeviceClaim:
    """The inference container's devices: its UUIDs, else its CUDA_VISIBLE_DEVICES entries."""
    if handshake.device == "cpu":
        return DeviceClaim(device_ids=(), source="handshake")
    ids: Sequence[str] = handshake.uuids
    if not ids and handshake.cuda_visible_devices:
        ids = [p.strip() for p in handshake.cuda_visible_devices.split(",") if p.strip()]
    return DeviceClaim(device_ids=tuple(dict.fromkeys(ids)), source="handshake")


def claim_from_flag(value: str, tree: DeviceTree) -> DeviceClaim:
    """`--devices`: an explicit list, or `all` for every GPU NVML sees."""
    if value.strip() == "all":
        ids = tuple(g.uuid for g in tree.gpus)
    else:
        ids = tuple(p.strip() for p in value.split(",") if p.strip())
    return DeviceClaim(device_ids=ids, source="flag")


def match_claim(claim: DeviceClaim, tree: DeviceTree) -> tuple[list[OwnedDevice], list[str]]:
    """Owned devices found on this node, and the claimed ids NVML does not know."""
    owned: list[OwnedDevice] = []
    unknown: list[str] = []
    for device_id in claim.device_ids:
        found: GpuIdentity | MigIdentity | None = tree.find(device_id)
        container = claim.container_of(device_id)
        if isinstance(found, MigIdentity):
            owned.append(OwnedDevice(gpu=found.parent, mig=found, container=container))
        elif isinstance(found, GpuIdentity):
            owned.append(OwnedDevice(gpu=found, container=container))
        else:
            unknown.append(device_id)
    return owned, unknown
