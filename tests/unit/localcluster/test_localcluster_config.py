"""Tool locations, kubeconfigs, certificate configs and component flags, without a cluster."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from localcluster import components, toolchain
from localcluster.certificates import KUBELET_CLIENT, KeyPair, Pki, render_openssl_config
from localcluster.cluster import free_ports, pick_pod_cidr
from localcluster.kubeconfigs import render_kubeconfig
from localcluster.layout import ClusterFiles

VERSIONS = {
    "K8S_VERSION": "v1.35.4",
    "ETCD_VERSION": "v3.6.16",
    "KWOK_VERSION": "v0.8.0",
    "HELM_VERSION": "v3.22.0",
}


def test_parse_versions_skips_comments_and_rejects_garbage() -> None:
    assert toolchain.parse_versions("# c\n\nA=1\n B = 2 \n") == {"A": "1", "B": "2"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        toolchain.parse_versions("A\n")


def test_the_repository_pins_every_tool() -> None:
    pinned = toolchain.parse_versions(toolchain.VERSIONS_FILE.read_text())
    assert set(VERSIONS) <= set(pinned)


def test_binaries_are_cached_by_version(tmp_path: Path) -> None:
    paths = toolchain.binary_paths(versions=VERSIONS, cache=tmp_path)
    assert paths["kube-apiserver"] == tmp_path / "bin" / "k8s-v1.35.4" / "kube-apiserver"
    assert paths["kubectl"].parent == paths["kube-scheduler"].parent
    assert paths["etcd"] == tmp_path / "bin" / "etcd-v3.6.16" / "etcd"
    assert paths["kwok"].parent.name == "kwok-v0.8.0"
    assert paths["helm"].parent.name == "helm-v3.22.0"


def test_a_missing_toolchain_says_to_run_make_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERANK_CACHE", str(tmp_path))
    with pytest.raises(toolchain.ToolchainMissingError, match="make tools"):
        toolchain.locate()


def test_kubeconfig_points_at_the_server_with_client_certificates(tmp_path: Path) -> None:
    config = render_kubeconfig(
        server="https://127.0.0.1:6443",
        ca_cert=tmp_path / "ca.crt",
        client_cert=tmp_path / "a.crt",
        client_key=tmp_path / "a.key",
        user="admin",
    )
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert config["users"][0]["user"]["client-key"] == str(tmp_path / "a.key")
    assert config["current-context"] == config["contexts"][0]["name"]


def test_client_certificate_config_sets_groups_and_client_auth() -> None:
    text = render_openssl_config(
        common_name="kuberank-admin", organization="system:masters", extended_key_usage="clientAuth"
    )
    assert "O = system:masters\nCN = kuberank-admin" in text
    assert "extendedKeyUsage = clientAuth" in text
    assert "CA:FALSE" in text


def _pki(tmp_path: Path) -> Pki:
    pair = KeyPair(cert=tmp_path / "x.crt", key=tmp_path / "x.key")
    return Pki(
        ca=pair,
        apiserver=pair,
        front_proxy_client=pair,
        clients={"admin": pair, KUBELET_CLIENT: pair},
        service_account_key=tmp_path / "sa.key",
        service_account_pub=tmp_path / "sa.pub",
    )


def test_every_component_listens_on_loopback_only(tmp_path: Path) -> None:
    tools = toolchain.Toolchain(
        versions=VERSIONS, paths=toolchain.binary_paths(versions=VERSIONS, cache=tmp_path)
    )
    files = ClusterFiles(tmp_path)
    pki = _pki(tmp_path)
    specs = [
        components.etcd(tools=tools, files=files, client_port=1, peer_port=2),
        components.kube_apiserver(tools=tools, files=files, pki=pki, port=3, etcd_client_port=1),
        components.kube_controller_manager(tools=tools, files=files, pki=pki, port=4),
        components.kube_scheduler(tools=tools, files=files, port=5),
        components.kwok(tools=tools, files=files, port=6, pod_cidr="127.20.0.0/16"),
    ]
    for spec in specs:
        assert spec.health_url.split("/")[2].startswith("127.0.0.1:")
        for arg in spec.argv[1:]:
            flag = arg.partition("=")[0]
            if flag == "--kubelet-preferred-address-types":  # how it reaches kubelets
                continue
            if any(word in flag for word in ("address", "listen", "urls", "etcd-servers")):
                assert "127.0.0.1" in arg, (spec.name, arg)
    apiserver = specs[1].argv
    assert "--authorization-mode=Node,RBAC" in apiserver
    assert any(a.startswith("--client-ca-file=") for a in apiserver)
    assert "--cidr=127.20.0.0/16" in specs[4].argv
    assert specs[4].env == {"HOME": str(files.home_dir)}


def test_with_the_real_node_pods_reach_the_api_server_at_the_node_ip(tmp_path: Path) -> None:
    tools = toolchain.Toolchain(
        versions=VERSIONS, paths=toolchain.binary_paths(versions=VERSIONS, cache=tmp_path)
    )
    argv = components.kube_apiserver(
        tools=tools, files=ClusterFiles(tmp_path), pki=_pki(tmp_path), port=3,
        etcd_client_port=1, pod_reachable_at="198.18.0.1",
    ).argv  # fmt: skip
    assert "--advertise-address=198.18.0.1" in argv
    assert "--endpoint-reconciler-type=lease" in argv
    assert "--service-cluster-ip-range=198.19.0.0/16" in argv
    assert "--kubelet-preferred-address-types=InternalIP" in argv  # never the host's DNS


def test_pod_cidr_is_a_loopback_slash_16_outside_127_0() -> None:
    for seed in range(50):
        cidr = pick_pod_cidr(random.Random(seed))
        first, second, *_ = cidr.split(".")
        assert first == "127"
        assert 16 <= int(second) <= 254
        assert cidr.endswith(".0.0/16")


def test_free_ports_are_distinct() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
