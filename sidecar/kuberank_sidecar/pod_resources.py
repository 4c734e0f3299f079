"""The kubelet pod-resources adapter: one gRPC `List` call over the kubelet's unix socket.

grpcio carries HTTP/2; the messages are decoded by hand (podresources_messages), so there is
no generated code and no protobuf runtime.
"""

from __future__ import annotations

from pathlib import Path

from kuberank_sidecar.ownership import ContainerDevices
from kuberank_sidecar.podresources_messages import decode_list_response

LIST_METHOD = "/v1.PodResourcesLister/List"
DEFAULT_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
# kubelet caps pod-resources responses at 16 MiB.
_MAX_MESSAGE = 16 * 1024 * 1024


class PodResourcesError(RuntimeError):
    """The kubelet could not be asked (socket missing, call failed, bad reply)."""


def list_pod_devices(socket: Path, *, timeout_s: float = 5.0) -> list[ContainerDevices]:
    """Every container's devices on this node, from kubelet's pod-resources v1 List."""
    import grpc  # Imported here: only pods that mount the socket need it.

    options = [("grpc.max_receive_message_length", _MAX_MESSAGE)]
    try:
        with grpc.insecure_channel(f"unix://{socket}", options=options) as channel:
            call = channel.unary_unary(LIST_METHOD)
            reply: bytes = call(b"", timeout=timeout_s)
    except grpc.RpcError as exc:
        raise PodResourcesError(f"kubelet pod-resources List on {socket} failed: {exc}") from exc
    try:
        return decode_list_response(reply)
    except ValueError as exc:
        raise PodResourcesError(f"kubelet pod-resources reply could not be decoded: {exc}") from exc
