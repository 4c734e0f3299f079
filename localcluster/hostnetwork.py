"""The real node's host network: addresses from 198.18.0.0/15 (reserved for benchmarking, so
no real network is ever reached), the interfaces that carry them, and the iptables chains the
kubelet and kube-proxy write; creating them and removing every trace again.

- node IP 198.18.0.1/32 on `krk-node0`, a bridge with no ports standing in for a dummy
  interface (the kubelet refuses a loopback node IP; kernels without CONFIG_DUMMY, like this
  one, still have bridges);
- pods in 198.18.128.0/17 on the bridge `krk-br0` (made by the CNI bridge plugin, gateway .1);
- Services (the API server's --service-cluster-ip-range) in 198.19.0.0/16, routed into the
  node interface so a ClusterIP kube-proxy has not programmed yet goes nowhere.

Every name here is fixed, so one machine runs one real node at a time (its owner is recorded in
OWNER_FILE; see localcluster/realnode.py).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NODE_INTERFACE = "krk-node0"
BRIDGE = "krk-br0"
INTERFACE_PREFIX = "krk-"
NODE_IP = "198.18.0.1"
POD_CIDR = "198.18.128.0/17"
POD_GATEWAY = "198.18.128.1"
SERVICE_CIDR = "198.19.0.0/16"
# the first address of SERVICE_CIDR: the `kubernetes` Service
KUBERNETES_SERVICE_IP = "198.19.0.1"
ALLOWED_NETWORK = "198.18.0.0/15"
# chains that the kubelet (KUBE-KUBELET-CANARY, KUBE-FIREWALL) and kube-proxy (every other
# KUBE-*) create; nothing else on the machine uses the prefix
CHAIN_PREFIX = "KUBE-"
TABLES = ("filter", "nat", "mangle")
_BUILTIN_CHAINS = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}


class HostNetworkError(RuntimeError):
    """A command that sets up the node's network failed; the message has the command."""


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise HostNetworkError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def create_node_interface() -> None:
    """The node interface with the node IP, and the Service range routed into it."""
    _run(["ip", "link", "add", NODE_INTERFACE, "type", "bridge"])
    _run(["ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_INTERFACE])
    _run(["ip", "link", "set", NODE_INTERFACE, "up"])
    _run(["ip", "route", "add", SERVICE_CIDR, "dev", NODE_INTERFACE, "src", NODE_IP])


@dataclass(frozen=True)
class Link:
    name: str
    kind: str
    master: str | None


def links() -> list[Link]:
    """Every network interface of the host's namespace, with its kind (dummy, bridge, veth)."""
    listing = json.loads(_run(["ip", "-json", "-details", "link", "show"]).stdout or "[]")
    return [
        Link(
            name=str(entry["ifname"]),
            kind=str((entry.get("linkinfo") or {}).get("info_kind", "")),
            master=entry.get("master"),
        )
        for entry in listing
    ]


def node_links() -> list[Link]:
    """The node's interfaces: ours by name, and the pods' veths still attached to the bridge."""
    return [
        link for link in links() if link.name.startswith(INTERFACE_PREFIX) or link.master == BRIDGE
    ]


def remove_links() -> None:
    """Delete the node's interfaces (the bridge's veths first; a missing one is fine)."""
    found = node_links()
    for link in sorted(found, key=lambda link: link.master is None):
        _run(["ip", "link", "delete", link.name], check=False)


def _save(binary: str, table: str) -> list[str]:
    result = _run([f"{binary}-save", "-t", table], check=False)
    return result.stdout.splitlines() if result.returncode == 0 else []


def kube_chains() -> dict[str, list[str]]:
    """'iptables:nat' -> the KUBE-* chains in it, for both address families and every table."""
    found: dict[str, list[str]] = {}
    for binary in ("iptables", "ip6tables"):
        for table in TABLES:
            chains = [
                line[1:].split()[0]
                for line in _save(binary, table)
                if line.startswith(":") and line[1:].startswith(CHAIN_PREFIX)
            ]
            if chains:
                found[f"{binary}:{table}"] = chains
    return found


def remove_kube_chains() -> None:
    """Delete the rules that jump to KUBE-* chains from the built-in chains, then the chains."""
    for binary in ("iptables", "ip6tables"):
        for table in TABLES:
            lines = _save(binary, table)
            chains = [
                line[1:].split()[0]
                for line in lines
                if line.startswith(":") and line[1:].startswith(CHAIN_PREFIX)
            ]
            if not chains:
                continue
            for line in lines:
                words = line.split()
                if (
                    len(words) > 2
                    and words[0] == "-A"
                    and words[1] in _BUILTIN_CHAINS
                    and any(word.startswith(CHAIN_PREFIX) for word in words[2:])
                ):
                    # `-A CHAIN rule...` deletes as `-D CHAIN rule...`; quoting as saved
                    _run(["sh", "-c", f"{binary} -w -t {table} -D {line[3:]}"], check=False)
            for chain in chains:
                _run([binary, "-w", "-t", table, "-F", chain], check=False)
            for chain in chains:
                _run([binary, "-w", "-t", table, "-X", chain], check=False)


def remove_stale_shim_sockets(directory: Path = Path("/run/containerd/s")) -> None:
    """containerd shims' sockets (always under /run/containerd/s) that nothing listens on."""
    if not directory.is_dir():
        return
    with contextlib.suppress(OSError):
        listening = {
            line.split()[-1]
            for line in Path("/proc/net/unix").read_text().splitlines()[1:]
            if len(line.split()) >= 8
        }
        for socket_file in directory.iterdir():
            if str(socket_file) not in listening:
                socket_file.unlink(missing_ok=True)
