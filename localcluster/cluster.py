"""A real local Kubernetes control plane with fake GPU nodes.

etcd → kube-apiserver (TLS, client certificates, Node+RBAC authorization) →
kube-controller-manager, kube-scheduler, kwok; every port is a free loopback port picked at
start, fake pods get IPs from a random /16 inside 127.0.0.0/8. Everything lives in one state
directory that `stop()` removes together with every process it started.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml

from localcluster import components, nodes, processes, realnode, stages
from localcluster.certificates import Pki, generate_pki
from localcluster.kubeconfigs import render_kubeconfig
from localcluster.layout import ClusterFiles
from localcluster.processes import Component, ComponentFailedError, PortInUseError
from localcluster.toolchain import Toolchain, locate

APISERVER_TIMEOUT = 120.0  # a cold apiserver on two busy cores takes 10-40 s
COMPONENT_TIMEOUT = 90.0
PORT_ATTEMPTS = 3
# set to a directory to keep the components' logs there when a cluster stops (for debugging)
KEEP_LOGS_ENV = "KUBERANK_CLUSTER_LOGS"
_STOP_ORDER_LAST = "etcd"  # the API server and its clients stop first, then their storage


class ClusterCommandError(subprocess.CalledProcessError):
    """kubectl/helm failed; unlike CalledProcessError its message includes stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{self.stderr}\nstdout:\n{self.output}"


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll `condition` until true; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((components.LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def pick_pod_cidr(rng: random.Random | None = None) -> str:
    """A random 127.N.0.0/16 (N in 16..254) so two clusters' pods rarely share addresses."""
    octet = (rng or random.SystemRandom()).randint(16, 254)
    return f"127.{octet}.0.0/16"


class LocalCluster:
    """A running local cluster. Start with `LocalCluster.start()`; `stop()` is idempotent."""

    def __init__(self, *, files: ClusterFiles, tools: Toolchain) -> None:
        self.files = files
        self.tools = tools
        self.server = ""
        self.pod_cidr = ""
        self.components: list[Component] = []
        self._popens: dict[int, subprocess.Popen[bytes]] = {}
        self._pki: Pki | None = None
        self._stopped = False
        self._previous_handlers: dict[int, Any] = {}
        self.real_node: realnode.RealNode | None = None
        self._detach = False

    # -- public attributes of the harness contract ---------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.files.kubeconfig

    @property
    def bin_dir(self) -> Path:
        return self.files.bin_dir

    @property
    def state_dir(self) -> Path:
        return self.files.state_dir

    @property
    def kubernetes_version(self) -> str:
        return self.tools.kubernetes_version

    def env(self) -> dict[str, str]:
        """The caller's environment with KUBECONFIG, PATH (our binaries first) and tool homes."""
        helm_home = self.files.state_dir / "helm"
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECACHEDIR": str(self.files.state_dir / "kube-cache"),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's kubectl; raise ClusterCommandError (with stderr) if `check`."""
        return self._run("kubectl", args, input=input, check=check, timeout=timeout)

    def helm(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's helm; raise ClusterCommandError (with stderr) if `check`."""
        return self._run("helm", args, input=None, check=check, timeout=timeout)

    def kubectl_json(self, *args: str, timeout: float = 60) -> Any:
        """`kubectl ... -o json`, parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)

    def add_gpu_nodes(
        self,
        count: int,
        *,
        prefix: str,
        gpus: int = 8,
        labels: Mapping[str, str] | None = None,
        mig_profile: str | None = None,
        timeout: float = 60,
    ) -> list[str]:
        """Create `count` Ready fake GPU nodes `<prefix>-<i>` labelled
        kuberank.dev/node-pool=<prefix> (plus `labels`); MIG profiles make mixed-strategy nodes."""
        manifests = nodes.render_gpu_nodes(
            count, prefix=prefix, gpus=gpus, labels=labels, mig_profile=mig_profile
        )
        self._create_nodes(manifests, timeout=timeout)
        return [m["metadata"]["name"] for m in manifests]

    def start_real_node(
        self, *, progress: Callable[[str], None] | None = None
    ) -> realnode.RealNode:
        """Start the real node (localcluster/realnode.py) if it is not running; it is stopped
        with the cluster. Sweeps what a killed cluster's real node left on the host first."""
        if self.real_node is None:
            if self._pki is None:
                raise RuntimeError("the cluster has not booted: start it with LocalCluster.start()")
            env = {**os.environ, "HOME": str(self.files.home_dir)}
            self.real_node = self._start_real_node(
                pki=self._pki, env=env, detach=self._detach, say=progress or (lambda _m: None)
            )
        return self.real_node

    def stop_real_node(self, *, timeout: float = 60) -> None:
        """Stop the real node and remove every trace of it (processes, mounts, interfaces,
        iptables chains, its Node object); the control plane keeps running."""
        parts = [c for c in self.components if c.name in realnode.COMPONENTS]
        processes.stop(parts, popens=self._popens)
        self.components = [c for c in self.components if c not in parts]
        self._write_record()
        realnode.teardown(self.files.state_dir)
        self.real_node = None
        self.kubectl("delete", "node", realnode.NODE_NAME, "--ignore-not-found", timeout=timeout)

    def delete_nodes(self, names: Sequence[str], *, timeout: float = 60) -> None:
        """Delete nodes (missing ones are fine); pod GC removes pods left bound to them."""
        if names:
            self.kubectl(
                "delete", "nodes", *names, "--ignore-not-found", "--wait=true", timeout=timeout
            )

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        state_dir: Path | None = None,
        detach: bool = False,
        with_default_nodes: bool = True,
        real_node: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> LocalCluster:
        """Start a cluster in `state_dir` (default: a new temporary directory); stop removes it.

        detach=False ties the processes to this one (they die with it; SIGTERM and exit stop
        them); detach=True leaves them running for `down` to stop later.
        real_node=True adds the real node (kubelet + containerd: localcluster/realnode.py).
        """
        tools = locate()
        path = state_dir or Path(tempfile.mkdtemp(prefix="kuberank-cluster-"))
        cluster = cls(files=ClusterFiles(path), tools=tools)
        if not detach:
            cluster._install_exit_handlers()
        try:
            cluster._boot(
                detach=detach,
                with_default_nodes=with_default_nodes,
                real_node=real_node,
                say=progress,
            )
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def stop(self) -> None:
        """Stop every component (whole process groups) and remove the state directory."""
        if self._stopped:
            return
        self._stopped = True
        self._restore_signal_handlers()
        stop_components(self.components, popens=self._popens)
        realnode.teardown(self.files.state_dir)
        keep_logs = os.environ.get(KEEP_LOGS_ENV)
        if keep_logs and self.files.logs_dir.is_dir():
            target = Path(keep_logs) / self.files.state_dir.name
            shutil.copytree(self.files.logs_dir, target, dirs_exist_ok=True)
        shutil.rmtree(self.files.state_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------------

    def _run(
        self, binary: str, args: Sequence[str], *, input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / binary), *args]
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterCommandError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def _install_exit_handlers(self) -> None:
        atexit.register(self.stop)
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is signal.SIG_DFL:
                self._previous_handlers[signum] = signal.signal(signum, _interrupt)

    def _restore_signal_handlers(self) -> None:
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        for signum, handler in self._previous_handlers.items():
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _write_record(self) -> None:
        record = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "pod_cidr": self.pod_cidr,
            "bin_dir": str(self.bin_dir),
            "components": [c.to_record() for c in self.components],
        }
        tmp = self.files.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(self.files.record)

    def _boot(
        self,
        *,
        detach: bool,
        with_default_nodes: bool,
        real_node: bool,
        say: Callable[[str], None] | None,
    ) -> None:
        files = self.files
        say = say or (lambda _message: None)
        self._detach = detach
        for directory in (files.state_dir, files.logs_dir, files.bin_dir, files.home_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for name, path in self.tools.paths.items():
            (files.bin_dir / name).symlink_to(path)
        self._pki = pki = generate_pki(files.pki_dir)
        self.pod_cidr = pick_pod_cidr()
        self._write_record()
        env = {**os.environ, "HOME": str(files.home_dir)}
        # /readyz of the API server is open to anyone, but check it the way clients connect
        api_context = ssl.create_default_context(cafile=str(pki.ca.cert))
        api_context.load_cert_chain(str(pki.clients["admin"].cert), str(pki.clients["admin"].key))

        def launch(
            make: Callable[[list[int]], components.ComponentSpec],
            ports: int,
            *,
            context: ssl.SSLContext | None,
            timeout: float,
        ) -> list[int]:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                chosen = free_ports(ports)
                spec = make(chosen)
                component, popen = processes.start(
                    spec, log=files.log(spec.name), env=env, die_with_parent=not detach
                )
                self.components.append(component)
                self._popens[component.pid] = popen
                self._write_record()
                try:
                    processes.wait_healthy(
                        component, popen, url=spec.health_url, context=context, timeout=timeout
                    )
                    return chosen
                except PortInUseError:
                    if attempt == PORT_ATTEMPTS:
                        raise
                    stop_components([component], popens={component.pid: popen})
            raise AssertionError("unreachable")

        say("starting etcd")
        etcd_port, _peer = launch(
            lambda p: components.etcd(
                tools=self.tools, files=files, client_port=p[0], peer_port=p[1]
            ),
            2,
            context=None,
            timeout=COMPONENT_TIMEOUT,
        )

        def apiserver(p: list[int]) -> components.ComponentSpec:
            self.server = f"https://{components.LOOPBACK}:{p[0]}"
            self._write_kubeconfigs(pki)
            return components.kube_apiserver(
                tools=self.tools,
                files=files,
                pki=pki,
                port=p[0],
                etcd_client_port=etcd_port,
                pod_reachable_at=realnode.NODE_IP if real_node else None,
            )

        say("starting kube-apiserver")
        launch(apiserver, 1, context=api_context, timeout=APISERVER_TIMEOUT)
        self._write_record()

        files.kwok_config.write_text(yaml.safe_dump_all(stages.render_stages()))
        # self-signed serving certificates: their health endpoints are probed, not trusted
        insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        say("starting kube-controller-manager, kube-scheduler, kwok")
        launch(
            lambda p: components.kube_controller_manager(
                tools=self.tools, files=files, pki=pki, port=p[0]
            ),
            1,
            context=insecure,
            timeout=COMPONENT_TIMEOUT,
        )
        launch(
            lambda p: components.kube_scheduler(tools=self.tools, files=files, port=p[0]),
            1,
            context=insecure,
            timeout=COMPONENT_TIMEOUT,
        )
        launch(
            lambda p: components.kwok(
                tools=self.tools, files=files, port=p[0], pod_cidr=self.pod_cidr
            ),
            1,
            context=None,
            timeout=COMPONENT_TIMEOUT,
        )
        # pods are rejected until the service-account controller made the namespace's default SA
        say("waiting for the default service account")
        with _explained_by(files.log("kube-controller-manager")):
            wait_until(
                lambda: processes.probe(
                    f"{self.server}/api/v1/namespaces/default/serviceaccounts/default",
                    context=api_context,
                ),
                timeout=COMPONENT_TIMEOUT,
                what="the default service account (kube-controller-manager's serviceaccount "
                "controller)",
            )
        if with_default_nodes:
            say("creating the fake GPU nodes")
            self._create_nodes(nodes.default_nodes(), timeout=COMPONENT_TIMEOUT)
        if real_node:
            self.real_node = self._start_real_node(pki=pki, env=env, detach=detach, say=say)

    def _start_real_node(
        self, *, pki: Pki, env: dict[str, str], detach: bool, say: Callable[[str], None]
    ) -> realnode.RealNode:
        def start_process(
            spec: components.ComponentSpec,
        ) -> tuple[Component, subprocess.Popen[bytes]]:
            component, popen = processes.start(
                spec, log=self.files.log(spec.name), env=env, die_with_parent=not detach
            )
            self.components.append(component)
            self._popens[component.pid] = popen
            self._write_record()
            return component, popen

        return realnode.start(
            state_dir=self.files.state_dir,
            pki=pki,
            server=self.server,
            ports=free_ports(4),
            start_process=start_process,
            kubectl=self.kubectl,
            say=say,
        )

    def _write_kubeconfigs(self, pki: Pki) -> None:
        for identity, pair in pki.clients.items():
            config = render_kubeconfig(
                server=self.server,
                ca_cert=pki.ca.cert,
                client_cert=pair.cert,
                client_key=pair.key,
                user=identity,
            )
            text = yaml.safe_dump(config, sort_keys=False)
            self.files.component_kubeconfig(identity).write_text(text)
            if identity == "admin":
                self.files.kubeconfig.write_text(text)

    def _create_nodes(self, manifests: list[dict[str, Any]], *, timeout: float) -> None:
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
        self.kubectl("create", "-f", "-", input=body, timeout=timeout)
        names = {m["metadata"]["name"] for m in manifests}

        def all_ready() -> bool:
            listing = self.kubectl_json("get", "nodes")
            ready = {
                item["metadata"]["name"]
                for item in listing["items"]
                if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in item.get("status", {}).get("conditions", [])
                )
            }
            return names <= ready

        with _explained_by(self.files.log("kwok")):
            wait_until(
                all_ready,
                timeout=timeout,
                interval=0.3,
                what=f"nodes {sorted(names)} to become Ready (kwok manages them)",
            )


@contextlib.contextmanager
def _explained_by(log: Path) -> Iterator[None]:
    """Add the tail of the responsible component's log to a timeout (the log may be gone soon)."""
    try:
        yield
    except TimeoutError as error:
        raise TimeoutError(f"{error}; last lines of {log}:\n{processes.log_tail(log)}") from None


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # KeyboardInterrupt unwinds like Ctrl-C: pytest runs fixture teardowns, `with` blocks exit
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def stop_components(
    started: Sequence[Component],
    *,
    popens: Mapping[int, subprocess.Popen[bytes]] | None = None,
) -> None:
    """Stop clients and the API server together, then etcd."""
    first = [c for c in started if c.name != _STOP_ORDER_LAST]
    last = [c for c in started if c.name == _STOP_ORDER_LAST]
    processes.stop(first, popens=popens)
    processes.stop(last, popens=popens)


# -- a cluster recorded in a state directory (the `up`/`down`/`status` CLI) -----------------------


def read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(ClusterFiles(state_dir).record.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record


def recorded_components(state_dir: Path) -> list[Component]:
    record = read_record(state_dir) or {}
    return [Component.from_record(c) for c in record.get("components", [])]


def stop_recorded(state_dir: Path) -> list[str]:
    """Stop the components recorded in `state_dir` and remove it; the names that were running."""
    found = recorded_components(state_dir)
    running = [c.name for c in found if processes.is_running(c)]
    stop_components(found)
    realnode.teardown(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)
    return running


@contextlib.contextmanager
def running_cluster(**kwargs: Any) -> Iterator[LocalCluster]:
    """`with running_cluster() as cluster:` — a started cluster, stopped on the way out."""
    cluster = LocalCluster.start(**kwargs)
    try:
        yield cluster
    finally:
        cluster.stop()


__all__ = [
    "ClusterCommandError",
    "ComponentFailedError",
    "LocalCluster",
    "running_cluster",
    "stop_recorded",
    "wait_until",
]
