"""`python -m localcluster up|down|status|demo`: the local cluster for people.

The cluster lives in .run/cluster in the repository (KUBERANK_CLUSTER_DIR overrides it) and keeps
running after `up` returns; `down` stops it and removes the directory.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from localcluster import hostnetwork, processes, realnode
from localcluster.cluster import (
    LocalCluster,
    read_record,
    recorded_components,
    stop_recorded,
)
from localcluster.layout import ClusterFiles
from localcluster.processes import ComponentFailedError
from localcluster.toolchain import REPO_ROOT, ToolchainMissingError

DEFAULT_STATE_DIR = REPO_ROOT / ".run" / "cluster"
NODE_COLUMNS = ",".join(
    [
        "NAME:.metadata.name",
        r"GPU:.status.allocatable.nvidia\.com/gpu",
        r"MIG-1G.10GB:.status.allocatable.nvidia\.com/mig-1g\.10gb",
        r"PRODUCT:.metadata.labels.nvidia\.com/gpu\.product",
        r"MIG-STRATEGY:.metadata.labels.nvidia\.com/mig\.strategy",
        "READY:.status.conditions[?(@.type=='Ready')].status",
    ]
)


def _state_dir() -> Path:
    configured = os.environ.get("KUBERANK_CLUSTER_DIR")
    return Path(configured).resolve() if configured else DEFAULT_STATE_DIR


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _running(state_dir: Path) -> bool:
    found = recorded_components(state_dir)
    return bool(found) and all(processes.is_running(c) for c in found)


def _print_usage(state_dir: Path) -> None:
    files = ClusterFiles(state_dir)
    record = read_record(state_dir) or {}
    print(f"API server: {record.get('server', '?')}   pod IPs: {record.get('pod_cidr', '?')}")
    node = realnode.attach(state_dir)
    if node is not None:
        print(
            f"real node: {node.name} at {hostnetwork.NODE_IP} (kubelet + containerd), pods "
            f"{hostnetwork.POD_CIDR}, Services {hostnetwork.SERVICE_CIDR}; taint "
            f"{realnode.REAL_NODE_LABEL}=true:NoSchedule; containerd at {node.files.socket}"
        )
        print("  load an OCI archive into it: python -m localcluster import-images ARCHIVE...")
    else:
        print(f"no real node ({realnode.ENABLE_ENV}=0 or not started): only kwok nodes")
    print("Use it from this shell with:")
    print(f"  export KUBECONFIG={files.kubeconfig} PATH={files.bin_dir}:$PATH")


def up(state_dir: Path) -> int:
    if _running(state_dir):
        _say(f"the local cluster is already running (state in {state_dir})")
        _print_usage(state_dir)
        return 0
    stale = stop_recorded(state_dir)  # a half-started or crashed earlier run
    if stale:
        _say(f"stopped leftovers of an earlier run: {', '.join(stale)}")
    started = time.monotonic()
    real_node = realnode.enabled_by_env()
    held = realnode.busy(state_dir) if real_node else None
    if held is not None:
        # the kwok nodes and everything else still work: one machine has one real node
        _say(f"starting without a real node: {held}")
        real_node = False
    cluster = LocalCluster.start(
        state_dir=state_dir, detach=True, real_node=real_node, progress=_say
    )
    _say(
        f"local cluster (Kubernetes {cluster.kubernetes_version}) up in "
        f"{time.monotonic() - started:.1f}s; state in {state_dir}"
    )
    _print_usage(state_dir)
    return 0


def down(state_dir: Path) -> int:
    stopped = stop_recorded(state_dir)
    if stopped:
        _say(f"stopped {', '.join(stopped)}; removed {state_dir}")
    else:
        _say("no local cluster was running")
    return 0


def status(state_dir: Path) -> int:
    found = recorded_components(state_dir)
    if not found:
        print(f"no local cluster recorded in {state_dir}; start one with `make cluster-up`")
        return 1
    for component in found:
        state = "running" if processes.is_running(component) else "NOT running"
        print(f"  {component.name:<24} pid {component.pid:<8} {state}")
    if not _running(state_dir):
        print("the cluster is broken: run `make cluster-down` then `make cluster-up`")
        return 1
    _print_usage(state_dir)
    return 0


def demo(state_dir: Path) -> int:
    _say("[1/8] the local control plane with fake GPU nodes")
    up(state_dir)
    files = ClusterFiles(state_dir)
    _say("fake GPU nodes and their capacity:")
    sys.stdout.flush()
    subprocess.run(
        [files.bin_dir / "kubectl", f"--kubeconfig={files.kubeconfig}", "get", "nodes",
         "-o", f"custom-columns={NODE_COLUMNS}"],
        check=True,
    )  # fmt: skip
    # The rest of the story (chart, operator, example, a query) is localcluster/release/demo.py.
    from localcluster.release.demo import tell_story

    return tell_story(state_dir)


def import_images(state_dir: Path, archives: list[Path]) -> int:
    node = realnode.attach(state_dir)
    if node is None:
        print(
            f"no real node runs in {state_dir}: start one with `make cluster-up`", file=sys.stderr
        )
        return 1
    for name in node.import_images(archives):
        _say(f"imported {name} into {node.name}")
    return 0


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcluster",
        description="Run the local Kubernetes control plane with fake GPU nodes "
        "(state in .run/cluster, or $KUBERANK_CLUSTER_DIR).",
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "demo", "import-images"],
        help="up: start it and print how to use it; down: stop it and remove its state; "
        "status: is it running; demo: up, then the chart, the example RerankerDeployment and a "
        "rerank query answered on one of its pods (localcluster/release/demo.py); "
        "import-images ARCHIVE...: load OCI archives into the real node's containerd",
    )
    parser.add_argument("archives", nargs="*", type=Path, help="OCI archives (import-images)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    state_dir = _state_dir()
    commands = {"up": up, "down": down, "status": status, "demo": demo}
    try:
        if args.command == "import-images":
            return import_images(state_dir, args.archives)
        return commands[args.command](state_dir)
    except (
        ToolchainMissingError,
        ComponentFailedError,
        TimeoutError,
        realnode.RealNodeError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
