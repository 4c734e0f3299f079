"""The few protobuf messages of kubelet's pod-resources v1 API, encoded and decoded by hand.

Only `List` is used: ListPodResourcesRequest is empty, and of ListPodResourcesResponse we read
pod name/namespace, container name, and each container's (resource_name, device_ids). Other
fields (CPU ids, memory, topology, dynamic resources) are skipped by wire type, so newer kubelets
that add fields still decode. Field numbers follow k8s.io/kubelet/pkg/apis/podresources/v1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from kuberank_sidecar.ownership import ContainerDevices

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs; LEN values as bytes, numbers as int."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 0x7
        if wire_type == _VARINT:
            value, pos = _read_varint(data, pos)
            yield number, value
        elif wire_type == _LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise WireError(f"field {number} runs past the end of the message")
            yield number, data[pos : pos + length]
            pos += length
        elif wire_type == _I64:
            pos += 8
        elif wire_type == _I32:
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire_type} in field {number}")
    if pos != len(data):
        raise WireError("fixed-width field runs past the end of the message")


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise WireError("expected a string field, got a number")
    return value.decode("utf-8")


def decode_list_response(data: bytes) -> list[ContainerDevices]:
    """Flatten ListPodResourcesResponse into one ContainerDevices per (container, resource)."""
    found: list[ContainerDevices] = []
    for number, pod_bytes in _fields(data):
        if number != 1 or not isinstance(pod_bytes, bytes):
            continue
        name = namespace = ""
        containers: list[bytes] = []
        for pnum, pval in _fields(pod_bytes):
            if pnum == 1:
                name = _text(pval)
            elif pnum == 2:
                namespace = _text(pval)
            elif pnum == 3 and isinstance(pval, bytes):
                containers.append(pval)
        for container_bytes in containers:
            container = ""
            device_groups: list[bytes] = []
            for cnum, cval in _fields(container_bytes):
                if cnum == 1:
                    container = _text(cval)
                elif cnum == 2 and isinstance(cval, bytes):
                    device_groups.append(cval)
            for group in device_groups:
                resource = ""
                ids: list[str] = []
                for dnum, dval in _fields(group):
                    if dnum == 1:
                        resource = _text(dval)
                    elif dnum == 2:
                        ids.append(_text(dval))
                found.append(
                    ContainerDevices(
                        pod=name,
                        namespace=namespace,
                        container=container,
                        resource_name=resource,
                        device_ids=tuple(ids),
                    )
                )
    return found


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _str_field(number: int, value: str) -> bytes:
    return _len_field(number, value.encode("utf-8"))


def encode_list_response(entries: Sequence[ContainerDevices]) -> bytes:
    """The inverse of decode_list_response, for a stand-in kubelet in tests and demos."""
    pods: dict[tuple[str, str], dict[str, list[ContainerDevices]]] = {}
    for entry in entries:
        containers = pods.setdefault((entry.namespace, entry.pod), {})
        containers.setdefault(entry.container, []).append(entry)
    out = bytearray()
    for (namespace, pod), containers in pods.items():
        pod_bytes = _str_field(1, pod) + _str_field(2, namespace)
        for container, groups in containers.items():
            container_bytes = _str_field(1, container)
            for group in groups:
                group_bytes = _str_field(1, group.resource_name) + b"".join(
                    _str_field(2, d) for d in group.device_ids
                )
                container_bytes += _len_field(2, group_bytes)
            pod_bytes += _len_field(3, container_bytes)
        out += _len_field(1, pod_bytes)
    return bytes(out)
