"""Command lines of the control-plane components. Pure: paths and ports in, argv out."""

from __future__ import annotations

from dataclasses import dataclass, field

from localcluster.certificates import FRONT_PROXY_CLIENT, KUBELET_CLIENT, Pki
from localcluster.hostnetwork import SERVICE_CIDR
from localcluster.layout import ClusterFiles
from localcluster.toolchain import Toolchain

LOOPBACK = "127.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
NODE_LEASE_SECONDS = 40
KWOK_NODE_SELECTOR = "kwok.x-k8s.io/node=fake"


@dataclass(frozen=True, kw_only=True)
class ComponentSpec:
    """How to run one component and how to tell it is serving."""

    name: str
    argv: list[str]
    health_url: str
    # extra environment on top of the harness's own
    env: dict[str, str] = field(default_factory=dict)


def etcd(
    *, tools: Toolchain, files: ClusterFiles, client_port: int, peer_port: int
) -> ComponentSpec:
    client = f"http://{LOOPBACK}:{client_port}"
    peer = f"http://{LOOPBACK}:{peer_port}"
    return ComponentSpec(
        name="etcd",
        argv=[
            str(tools["etcd"]),
            "--name=kuberank",
            f"--data-dir={files.etcd_data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kuberank={peer}",
            "--initial-cluster-state=new",
            # a throw-away cluster: durability costs seconds per test run and buys nothing
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        health_url=f"{client}/health",
    )


def kube_apiserver(
    *,
    tools: Toolchain,
    files: ClusterFiles,
    pki: Pki,
    port: int,
    etcd_client_port: int,
    pod_reachable_at: str | None = None,
) -> ComponentSpec:
    """`pod_reachable_at`: the real node's IP, where pods reach the API server through the
    `kubernetes` Service (the API server then listens beyond loopback, and its endpoint
    reconciler publishes that address); None: loopback only, no endpoints."""
    if pod_reachable_at is None:
        listen = [
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            # Endpoints may not hold loopback addresses: the `kubernetes` service would fail
            "--endpoint-reconciler-type=none",
        ]
    else:
        listen = [
            "--bind-address=0.0.0.0",
            f"--advertise-address={pod_reachable_at}",
            "--endpoint-reconciler-type=lease",
        ]
    return ComponentSpec(
        name="kube-apiserver",
        argv=[
            str(tools["kube-apiserver"]),
            *listen,
            f"--secure-port={port}",
            f"--cert-dir={files.cert_dir('kube-apiserver')}",
            f"--etcd-servers=http://{LOOPBACK}:{etcd_client_port}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            # requestheader (front proxy) settings: the controller-manager and scheduler
            # delegate authentication and expect them, as aggregated API servers would
            f"--requestheader-client-ca-file={pki.ca.cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
            f"--proxy-client-key-file={pki.front_proxy_client.key}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            # 198.19.0.0/16: routed only by the real node's kube-proxy (localcluster/hostnetwork.py)
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # logs and exec on the real node: the API server authenticates to its kubelet, whose
            # serving certificate the cluster's CA signed
            f"--kubelet-client-certificate={pki.clients[KUBELET_CLIENT].cert}",
            f"--kubelet-client-key={pki.clients[KUBELET_CLIENT].key}",
            f"--kubelet-certificate-authority={pki.ca.cert}",
            # the node IP, never its name: a name would be looked up in the host's DNS
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",
            "--profiling=false",
        ],
        health_url=f"https://{LOOPBACK}:{port}/readyz",
    )


def _client_flags(files: ClusterFiles, identity: str) -> list[str]:
    kubeconfig = files.component_kubeconfig(identity)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
    ]


def kube_controller_manager(
    *, tools: Toolchain, files: ClusterFiles, pki: Pki, port: int
) -> ComponentSpec:
    return ComponentSpec(
        name="kube-controller-manager",
        argv=[
            str(tools["kube-controller-manager"]),
            *_client_flags(files, "controller-manager"),
            f"--bind-address={LOOPBACK}",
            f"--secure-port={port}",
            f"--cert-dir={files.cert_dir('kube-controller-manager')}",
            "--leader-elect=false",
            "--cluster-name=kuberank-local",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            "--allocate-node-cidrs=false",
            # scale tests create and garbage-collect hundreds of pods: the default 20 qps crawls
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
        ],
        health_url=f"https://{LOOPBACK}:{port}/healthz",
    )


def kube_scheduler(*, tools: Toolchain, files: ClusterFiles, port: int) -> ComponentSpec:
    return ComponentSpec(
        name="kube-scheduler",
        argv=[
            str(tools["kube-scheduler"]),
            *_client_flags(files, "scheduler"),
            f"--bind-address={LOOPBACK}",
            f"--secure-port={port}",
            f"--cert-dir={files.cert_dir('kube-scheduler')}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        health_url=f"https://{LOOPBACK}:{port}/healthz",
    )


def kwok(*, tools: Toolchain, files: ClusterFiles, port: int, pod_cidr: str) -> ComponentSpec:
    return ComponentSpec(
        name="kwok",
        argv=[
            str(tools["kwok"]),
            f"--config={files.kwok_config}",
            f"--kubeconfig={files.component_kubeconfig('kwok')}",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}",
            "--manage-all-nodes=false",
            f"--cidr={pod_cidr}",
            f"--node-ip={LOOPBACK}",
            f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            f"--server-address={LOOPBACK}:{port}",
        ],
        health_url=f"http://{LOOPBACK}:{port}/healthz",
        # kwok also loads ~/.kwok/kwok.yaml when it exists: keep the user's out
        env={"HOME": str(files.home_dir)},
    )
