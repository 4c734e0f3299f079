"""Find this pod's devices: `--devices`, else kubelet pod-resources, else the handshake file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kuberank_sidecar.devices import DeviceTree
from kuberank_sidecar.ownership import (
    ContainerDevices,
    DeviceClaim,
    HandshakeError,
    claim_from_flag,
    claim_from_handshake,
    claim_from_pod_resources,
    parse_handshake,
)
from kuberank_sidecar.pod_resources import PodResourcesError, list_pod_devices

log = logging.getLogger(__name__)

NO_CLAIM = DeviceClaim(device_ids=(), source="none")


@dataclass(frozen=True)
class ResolverConfig:
    devices_flag: str | None
    pod_resources_socket: Path
    handshake_file: Path
    pod_name: str
    pod_namespace: str


class DeviceResolver:
    """Reads the claim from the first source that exists; keeps the last good claim on errors."""

    def __init__(
        self,
        config: ResolverConfig,
        *,
        list_devices: Callable[[Path], list[ContainerDevices]] = list_pod_devices,
    ) -> None:
        self._config = config
        self._list_devices = list_devices
        self._handshake_stamp: tuple[int, int] | None = None
        self._last = NO_CLAIM
        self._last_problem = ""

    def _problem(self, message: str) -> DeviceClaim:
        if message != self._last_problem:
            log.warning("%s", message)
            self._last_problem = message
        return self._last

    def resolve(self, tree: DeviceTree) -> DeviceClaim:
        cfg = self._config
        if cfg.devices_flag:
            self._last = claim_from_flag(cfg.devices_flag, tree)
        elif cfg.pod_resources_socket.exists():
            if not cfg.pod_name or not cfg.pod_namespace:
                return self._problem(
                    "the kubelet pod-resources socket is mounted but --pod-name/--pod-namespace "
                    "are empty: set KUBERANK_POD_NAME and KUBERANK_POD_NAMESPACE from the "
                    "downward API (metadata.name, metadata.namespace)"
                )
            try:
                listing = self._list_devices(cfg.pod_resources_socket)
            except PodResourcesError as exc:
                return self._problem(str(exc))
            self._last = claim_from_pod_resources(
                listing, pod=cfg.pod_name, namespace=cfg.pod_namespace
            )
        elif cfg.handshake_file.exists():
            try:
                st = cfg.handshake_file.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp != self._handshake_stamp:
                    handshake = parse_handshake(cfg.handshake_file.read_text())
                    self._last = claim_from_handshake(handshake)
                    self._handshake_stamp = stamp
            except (OSError, HandshakeError) as exc:
                return self._problem(f"device handshake file {cfg.handshake_file}: {exc}")
        else:
            self._last = NO_CLAIM
        self._last_problem = ""
        return self._last
