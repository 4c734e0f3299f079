"""A real node beside the kwok nodes: Debian's containerd + runc + CNI plugins (bridge,
host-local), the kubelet and kube-proxy built from the control plane's kubernetes module.

Everything the node keeps lives under `<state dir>/node` (containerd's root and state, pod
logs, the CNI config and IPAM state) and, for its unix sockets' short paths, under
/run/kuberank/node-<hash of the state dir> (containerd's socket, the kubelet's root dir with the
pods' volumes), so `teardown` removes it whole: the shims and container processes, every mount
(overlay rootfs, shm, netns, projected volumes), the interfaces and the KUBE-* iptables chains,
the kubepods cgroups. A machine runs
one real node at a time (the network names are fixed); the owner is recorded in OWNER_FILE, and
a cluster that starts sweeps what a killed owner left behind.

The node is `real-0`, labelled kuberank.dev/node-pool=real and kuberank.dev/real-node=true,
tainted kuberank.dev/real-node=true:NoSchedule (pods land there only when they tolerate it), and
advertises NODE_GPUS × nvidia.com/gpu the way a device plugin would (a status patch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from localcluster import hostnetwork, nodeimages
from localcluster.certificates import Pki, issue_certificate
from localcluster.components import LOOPBACK, ComponentSpec
from localcluster.kubeconfigs import render_kubeconfig
from localcluster.nodes import GPU_RESOURCE, H100_80GB_HBM3, NODE_POOL_LABEL, gfd_labels
from localcluster.ociarchive import archive_image_names
from localcluster.processes import Component, wait_healthy
from localcluster.toolchain import node_binaries

NODE_NAME = "real-0"
NODE_IP = hostnetwork.NODE_IP
REAL_NODE_LABEL = "kuberank.dev/real-node"
REAL_NODE_POOL = "real"
TAINT = {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}
NODE_GPUS = 2
# KUBERANK_REAL_NODE=0: the e2e session cluster and `make cluster-up` start without the node
ENABLE_ENV = "KUBERANK_REAL_NODE"
RUN_ROOT = Path("/run/kuberank")
OWNER_FILE = RUN_ROOT / "real-node.json"
CONTAINERD_NAMESPACE = "k8s.io"  # the CRI plugin's namespace: images the kubelet sees
CNI_BIN_DIR = Path("/usr/lib/cni")
CONTAINER_LOG_LINKS = Path("/var/log/containers")  # the kubelet's fixed symlink directory
CGROUP_ROOT = Path("/sys/fs/cgroup")
START_TIMEOUT = 120.0
_SHIM = "containerd-shim-runc-v2"
COMPONENTS = ("containerd", "kubelet", "kube-proxy")  # their names in the cluster's record


class RealNodeError(RuntimeError):
    """The real node cannot start here; the message says why and how to run without it."""


def enabled_by_env() -> bool:
    """Whether the e2e session cluster and `up` start the real node (default: yes)."""
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


@dataclass(frozen=True)
class NodeFiles:
    """Paths of the real node inside a cluster's state directory."""

    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / "node"

    @property
    def record(self) -> Path:
        return self.root / "node.json"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def run_dir(self) -> Path:
        """Where the node's unix sockets live, containerd's and the kubelet's (its root dir):
        a short path, as a socket's is at most 104 bytes; one per state directory."""
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return RUN_ROOT / f"node-{digest}"

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def kubelet_root(self) -> Path:
        return self.run_dir / "kubelet"

    @property
    def directories(self) -> tuple[Path, Path]:
        return (self.root, self.run_dir)

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    def config(self, component: str) -> Path:
        return self.root / f"{component}.yaml"

    def kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"


# -- rendering (pure) ------------------------------------------------------------------------------


def render_containerd_config(files: NodeFiles, *, sandbox_image: str) -> str:
    """containerd's config: its own root, state and socket; the CRI plugin as this host needs
    it (cgroupfs, restrict_oom_score_adj without CAP_SYS_RESOURCE), netns under its state."""
    base = files.root / "containerd"
    return f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{files.socket}"

[ttrpc]
  address = "{files.socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "{LOOPBACK}"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{base / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{files.cni_conf_dir}"
    max_conf_num = 1
"""


def render_cni_config(files: NodeFiles) -> dict[str, Any]:
    """Pods on the bridge in POD_CIDR; no masquerade (pods reach only 198.18.0.0/15)."""
    return {
        "cniVersion": "0.4.0",
        "name": "kuberank",
        "plugins": [
            {
                "type": "bridge",
                "bridge": hostnetwork.BRIDGE,
                "isGateway": True,
                # the default route goes to the host (ip_forward stays off: nowhere further)
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [
                        [{"subnet": hostnetwork.POD_CIDR, "gateway": hostnetwork.POD_GATEWAY}]
                    ],
                    "dataDir": str(files.root / "cni" / "ipam"),
                },
            }
        ],
    }


def render_kubelet_config(
    files: NodeFiles, *, pki: Pki, port: int, healthz_port: int, serving: tuple[Path, Path]
) -> dict[str, Any]:
    """The KubeletConfiguration: cgroupfs on this hybrid-cgroup host, x509 + webhook auth,
    image GC off (the imported images cannot be pulled back), no eviction for a busy disk."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": hostnetwork.NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": LOOPBACK,
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca.cert)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving[0]),
        "tlsPrivateKeyFile": str(serving[1]),
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{files.socket}",
        "podLogsDir": str(files.pod_logs),
        "resolvConf": str(files.root / "resolv.conf"),
        "registerWithTaints": [TAINT],
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "maxPods": 50,
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def render_kube_proxy_config(
    files: NodeFiles, *, healthz_port: int, metrics_port: int
) -> dict[str, Any]:
    """iptables mode; no sysctl writes (conntrack limits, route_localnet) on a shared host."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(files.kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "bindAddress": hostnetwork.NODE_IP,
        "healthzBindAddress": f"{LOOPBACK}:{healthz_port}",
        "metricsBindAddress": f"{LOOPBACK}:{metrics_port}",
        "clusterCIDR": hostnetwork.POD_CIDR,
        "nodePortAddresses": [hostnetwork.ALLOWED_NETWORK],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def node_labels() -> dict[str, str]:
    return {
        NODE_POOL_LABEL: REAL_NODE_POOL,
        REAL_NODE_LABEL: "true",
        **gfd_labels(model=H100_80GB_HBM3, gpus=NODE_GPUS, mig=None),
    }


def containerd_spec(files: NodeFiles) -> ComponentSpec:
    return ComponentSpec(
        name="containerd",
        argv=["containerd", f"--config={files.containerd_config}"],
        health_url="",  # a unix socket: wait_containerd checks it
    )


def kubelet_spec(files: NodeFiles, *, kubelet: Path) -> ComponentSpec:
    labels = ",".join(f"{k}={v}" for k, v in node_labels().items())
    healthz_port = yaml.safe_load(files.config("kubelet").read_text())["healthzPort"]
    return ComponentSpec(
        name="kubelet",
        argv=[
            str(kubelet),
            f"--config={files.config('kubelet')}",
            f"--kubeconfig={files.kubeconfig('kubelet')}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={hostnetwork.NODE_IP}",
            f"--root-dir={files.kubelet_root}",
            f"--cert-dir={files.pki_dir}",
            f"--node-labels={labels}",
            "--v=1",
        ],
        health_url=f"http://{LOOPBACK}:{healthz_port}/healthz",
    )


def kube_proxy_spec(files: NodeFiles, *, kube_proxy: Path, healthz_port: int) -> ComponentSpec:
    return ComponentSpec(
        name="kube-proxy",
        argv=[str(kube_proxy), f"--config={files.config('kube-proxy')}", "--v=1"],
        health_url=f"http://{LOOPBACK}:{healthz_port}/healthz",
    )


# -- running ---------------------------------------------------------------------------------

StartProcess = Callable[[ComponentSpec], "tuple[Component, subprocess.Popen[bytes]]"]
Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class RealNode:
    """The started node: its name and how to reach its containerd."""

    name: str
    files: NodeFiles

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", f"--address={self.files.socket}", f"--namespace={CONTAINERD_NAMESPACE}"]
        result = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RealNodeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def images(self) -> set[str]:
        listing = self.ctr("images", "list", "--quiet").stdout
        return {line.strip() for line in listing.splitlines() if line.strip()}

    def import_images(self, archives: Iterable[Path]) -> list[str]:
        """Import OCI archives into the node's containerd (where the kubelet finds them); the
        image names they create (from their index.json annotations)."""
        names: list[str] = []
        for archive in archives:
            wanted = archive_image_names(archive)
            self.ctr("images", "import", str(archive))
            missing = set(wanted) - self.images()
            if missing:
                raise RealNodeError(f"importing {archive} did not create {sorted(missing)}")
            names += wanted
        return names

    def ensure_image(self, archive: Path) -> str:
        """Import `archive` unless the node holds its image already (by name); the name."""
        (wanted,) = archive_image_names(archive)
        if wanted not in self.images():
            self.import_images([archive])
        return wanted


def attach(state_dir: Path) -> RealNode | None:
    """The real node of the cluster recorded in `state_dir`, if it has one."""
    files = NodeFiles(state_dir)
    return RealNode(name=NODE_NAME, files=files) if files.record.is_file() else None


def preflight() -> None:
    """Why this host cannot run the node, as an error that says how to go without it."""
    problems = []
    if os.geteuid() != 0:
        problems.append("it needs root (network interfaces, mounts, cgroups)")
    for tool in ("containerd", "runc", "ctr", "ip", "iptables", "iptables-save"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not installed")
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN_DIR / plugin).is_file():
            problems.append(f"the CNI plugin {CNI_BIN_DIR / plugin} is missing")
    if problems:
        raise RealNodeError(
            "cannot start the real node: " + "; ".join(problems) + ". Install them with "
            f"hack/install-system-deps.sh, or run without it: {ENABLE_ENV}=0"
        )


def _read_owner() -> Path | None:
    try:
        return Path(json.loads(OWNER_FILE.read_text())["state_dir"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None


def _owner_alive(state_dir: Path) -> bool:
    record = NodeFiles(state_dir).record
    try:
        components = json.loads(record.read_text()).get("components", [])
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    from localcluster.processes import is_running

    return any(is_running(Component.from_record(c)) for c in components)


def busy(state_dir: Path | None = None) -> str | None:
    """Why another live cluster (not `state_dir`'s) holds the machine's real node, or None."""
    owner = _read_owner()
    if owner is None or owner == state_dir or not _owner_alive(owner):
        return None
    return (
        f"the real node is already run by the cluster in {owner}: stop it "
        f"(KUBERANK_CLUSTER_DIR={owner} python -m localcluster down) or start this one "
        f"without a real node ({ENABLE_ENV}=0)"
    )


def claim(state_dir: Path) -> None:
    """Take the machine's real node for `state_dir`, sweeping what a dead owner left."""
    reason = busy(state_dir)
    if reason is not None:
        raise RealNodeError(reason)
    owner = _read_owner()
    if owner is not None and owner != state_dir:
        teardown(owner)
    sweep_host()
    OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
    OWNER_FILE.write_text(json.dumps({"state_dir": str(state_dir)}))


def _write_yaml(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _identities(files: NodeFiles, *, pki: Pki, server: str) -> tuple[Path, Path]:
    """Kubeconfigs of the kubelet (Node authorizer: system:node:<name> in system:nodes) and
    kube-proxy (system:kube-proxy, bound by the default system:node-proxier binding); the
    kubelet's serving certificate."""
    for component, common_name, organization in (
        ("kubelet", f"system:node:{NODE_NAME}", "system:nodes"),
        ("kube-proxy", "system:kube-proxy", None),
    ):
        pair = issue_certificate(
            files.pki_dir,
            f"{component}-client",
            ca=pki.ca,
            common_name=common_name,
            organization=organization,
            extended_key_usage="clientAuth",
        )
        config = render_kubeconfig(
            server=server,
            ca_cert=pki.ca.cert,
            client_cert=pair.cert,
            client_key=pair.key,
            user=common_name,
        )
        _write_yaml(files.kubeconfig(component), config)
    serving = issue_certificate(
        files.pki_dir,
        "kubelet-serving",
        ca=pki.ca,
        common_name=f"system:node:{NODE_NAME}",
        organization="system:nodes",
        extended_key_usage="serverAuth",
        subject_alt_names=(f"IP:{hostnetwork.NODE_IP}", f"DNS:{NODE_NAME}"),
    )
    return serving.cert, serving.key


def _write_node_record(files: NodeFiles, components: Sequence[Component]) -> None:
    files.record.write_text(
        json.dumps({"name": NODE_NAME, "components": [c.to_record() for c in components]})
    )


def wait_containerd(
    files: NodeFiles, component: Component, popen: subprocess.Popen[bytes], *, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            from localcluster.processes import log_tail

            raise RealNodeError(
                f"containerd exited with status {popen.returncode} while starting; last lines "
                f"of {component.log}:\n{log_tail(component.log)}"
            )
        if files.socket.exists():
            ready = subprocess.run(
                ["ctr", f"--address={files.socket}", "version"],
                capture_output=True,
                check=False,
                timeout=10,
            )
            if ready.returncode == 0:
                return
        if time.monotonic() > deadline:
            raise RealNodeError(f"containerd did not serve {files.socket} within {timeout:.0f}s")
        time.sleep(0.2)


def start(
    *,
    state_dir: Path,
    pki: Pki,
    server: str,
    ports: Sequence[int],
    start_process: StartProcess,
    kubectl: Kubectl,
    say: Callable[[str], None],
    timeout: float = START_TIMEOUT,
) -> RealNode:
    """Start containerd, the kubelet and kube-proxy for `state_dir`'s cluster; return once the
    node is Ready with its images and nvidia.com/gpu capacity. `ports`: four free ports."""
    preflight()
    binaries = node_binaries()
    files = NodeFiles(state_dir)
    claim(state_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    files.run_dir.mkdir(parents=True, exist_ok=True)
    (files.root / "resolv.conf").write_text("")  # pods get no DNS: nothing outside to resolve
    kubelet_port, kubelet_healthz, proxy_healthz, proxy_metrics = ports
    hostnetwork.create_node_interface()
    pause_archive, pause_name = nodeimages.pause_image()
    busybox_archive, _busybox = nodeimages.busybox_image()
    serving = _identities(files, pki=pki, server=server)
    files.containerd_config.parent.mkdir(parents=True, exist_ok=True)
    files.containerd_config.write_text(render_containerd_config(files, sandbox_image=pause_name))
    files.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    (files.cni_conf_dir / "10-kuberank.conflist").write_text(
        json.dumps(render_cni_config(files), indent=2)
    )
    _write_yaml(
        files.config("kubelet"),
        render_kubelet_config(
            files, pki=pki, port=kubelet_port, healthz_port=kubelet_healthz, serving=serving
        ),
    )
    _write_yaml(
        files.config("kube-proxy"),
        render_kube_proxy_config(files, healthz_port=proxy_healthz, metrics_port=proxy_metrics),
    )
    started: list[Component] = []

    say("starting containerd (the real node's runtime)")
    containerd, popen = start_process(containerd_spec(files))
    started.append(containerd)
    _write_node_record(files, started)
    wait_containerd(files, containerd, popen, timeout=timeout)
    node = RealNode(name=NODE_NAME, files=files)
    node.import_images([pause_archive, busybox_archive])

    say(f"starting kubelet and kube-proxy (node {NODE_NAME}, IP {hostnetwork.NODE_IP})")
    for spec in (
        kubelet_spec(files, kubelet=binaries["kubelet"]),
        kube_proxy_spec(files, kube_proxy=binaries["kube-proxy"], healthz_port=proxy_healthz),
    ):
        component, popen = start_process(spec)
        started.append(component)
        _write_node_record(files, started)
        wait_healthy(component, popen, url=spec.health_url, context=None, timeout=timeout)
    _wait_ready(kubectl, timeout=timeout)
    advertise_gpus(kubectl, count=NODE_GPUS, timeout=timeout)
    return node


def _node(kubectl: Kubectl) -> dict[str, Any] | None:
    result = kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    node: dict[str, Any] = json.loads(result.stdout)
    return node


def _wait(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RealNodeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def _wait_ready(kubectl: Kubectl, *, timeout: float) -> None:
    def ready() -> bool:
        node = _node(kubectl)
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    _wait(ready, timeout=timeout, what=f"node {NODE_NAME} to become Ready (see the kubelet log)")


def advertise_gpus(kubectl: Kubectl, *, count: int, timeout: float = 60) -> None:
    """Advertise `count` nvidia.com/gpu in the node's capacity, as the NVIDIA device plugin
    would (the kubelet derives allocatable from it; pods asking for GPUs schedule there)."""
    path = "/status/capacity/" + GPU_RESOURCE.replace("/", "~1")
    patch = json.dumps([{"op": "add", "path": path, "value": str(count)}])
    kubectl("patch", "node", NODE_NAME, "--subresource=status", "--type=json", "-p", patch)

    def allocatable() -> bool:
        node = _node(kubectl) or {}
        return bool(node.get("status", {}).get("allocatable", {}).get(GPU_RESOURCE) == str(count))

    _wait(allocatable, timeout=timeout, what=f"{count} {GPU_RESOURCE} allocatable on {NODE_NAME}")


# -- cleanup ---------------------------------------------------------------------------------


def _mountpoints() -> list[str]:
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4:
                points.append(fields[4].encode().decode("unicode_escape"))
    return points


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory)
    return [p for p in _mountpoints() if p == prefix or p.startswith(prefix + "/")]


def unmount_under(directory: Path) -> None:
    """Unmount everything mounted at or below `directory`, deepest first (lazily if busy)."""
    for _attempt in range(5):
        points = mounts_under(directory)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _shim_address(process: psutil.Process) -> str | None:
    with contextlib.suppress(psutil.Error):
        argv = process.cmdline()
        if argv and os.path.basename(argv[0]) == _SHIM and "-address" in argv:
            return argv[argv.index("-address") + 1]
    return None


def _listening_sockets() -> set[str]:
    with contextlib.suppress(OSError):
        return {
            line.split()[-1]
            for line in Path("/proc/net/unix").read_text().splitlines()[1:]
            if len(line.split()) >= 8
        }
    return set()


def node_processes(directory: Path | None) -> list[psutil.Process]:
    """containerd shims (and their containers) of the containerd whose socket is under
    `directory`, or, with None, every shim whose containerd is gone; and every process in a
    kubepods cgroup."""
    listening = _listening_sockets()
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        address = _shim_address(process)
        if address is None:
            continue
        ours = (
            address.startswith(str(directory) + "/")
            if directory is not None
            else address not in listening
        )
        if ours:
            found[process.pid] = process
            with contextlib.suppress(psutil.Error):
                for child in process.children(recursive=True):
                    found[child.pid] = child
    for pid in _kubepods_pids():
        with contextlib.suppress(psutil.Error):
            found.setdefault(pid, psutil.Process(pid))
    return list(found.values())


def _kubepods_dirs() -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    return [d for d in CGROUP_ROOT.glob("*/kubepods*") if d.is_dir()]


def _kubepods_pids() -> set[int]:
    pids: set[int] = set()
    for top in _kubepods_dirs():
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in procs.read_text().split()}
    return pids


def _kill(processes: Sequence[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(list(processes), timeout=10)


def remove_kubepods_cgroups() -> None:
    for top in _kubepods_dirs():
        for directory in sorted(
            (d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(str(d))
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _remove_log_links(directory: Path | None) -> None:
    if not CONTAINER_LOG_LINKS.is_dir():
        return
    for link in CONTAINER_LOG_LINKS.iterdir():
        if not link.is_symlink():
            continue
        target = os.readlink(link)
        if (directory is not None and target.startswith(str(directory) + "/")) or not link.exists():
            link.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        CONTAINER_LOG_LINKS.rmdir()  # only when empty: nothing else of the host used it


def sweep_host() -> None:
    """What any dead real node may have left on the host: shims whose containerd is gone and
    their containers, kubepods cgroups, the node's interfaces and the KUBE-* chains."""
    _kill(node_processes(None))
    remove_kubepods_cgroups()
    hostnetwork.remove_links()
    hostnetwork.remove_kube_chains()
    hostnetwork.remove_stale_shim_sockets()
    _remove_log_links(None)


def teardown(state_dir: Path) -> None:
    """Remove every trace of the real node of `state_dir`'s cluster, its processes already
    stopped (the cluster stops them with the control plane). A no-op without a node."""
    files = NodeFiles(state_dir)
    owner = _read_owner()
    if not files.root.exists() and owner != state_dir:
        return
    _kill(node_processes(files.run_dir))
    # the kubelet and containerd are stopped by the cluster; a recorded one still running
    # (the cluster's own stop failed) goes the same way
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        from localcluster.processes import is_running

        recorded = [
            Component.from_record(c)
            for c in json.loads(files.record.read_text()).get("components", [])
        ]
        leftover = []
        for component in recorded:
            if is_running(component):
                with contextlib.suppress(psutil.Error):
                    leftover.append(psutil.Process(component.pid))
        _kill(leftover)
    for directory in files.directories:
        unmount_under(directory)
    sweep_host()
    _remove_log_links(files.root)
    for directory in files.directories:
        if not mounts_under(directory):  # never remove files through a mount
            shutil.rmtree(directory, ignore_errors=True)
    if owner == state_dir:
        OWNER_FILE.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        RUN_ROOT.rmdir()  # only when no other node's sockets are there


def leftovers(state_dir: Path) -> dict[str, list[str]]:
    """What of a real node is still on the host (empty lists after a clean stop): for tests.

    `processes`, `mounts` and `state` are this node's; the rest is the host's (a real node
    running for another cluster has them too)."""
    files = NodeFiles(state_dir)
    mine = (str(files.root), str(files.run_dir))
    processes, shims = [], []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            argv = process.cmdline()
            if any(path in arg for arg in argv for path in mine):
                processes.append(f"{process.pid} {' '.join(argv)}")
            if _shim_address(process):
                shims.append(f"{process.pid} {' '.join(argv)}")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {
        "processes": processes,
        "mounts": [m for d in files.directories for m in mounts_under(d)],
        "state": [str(p) for p in files.directories if p.exists()],
        "shims": shims,
        "links": [link.name for link in hostnetwork.node_links()],
        "iptables chains": [f"{t}/{c}" for t, cs in hostnetwork.kube_chains().items() for c in cs],
        "kubepods cgroups": [str(d) for d in _kubepods_dirs()],
        "netns": [line for line in netns.stdout.splitlines() if line.startswith("cni-")],
    }
