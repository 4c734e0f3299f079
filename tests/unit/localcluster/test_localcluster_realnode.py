"""The real node's pure parts: its OCI archives, containerd/CNI/kubelet/kube-proxy configs, and
the apiserver flags that go with it."""

from __future__ import annotations

import ipaddress
import json
import tarfile
import tomllib
from pathlib import Path

from localcluster import hostnetwork, realnode
from localcluster.ociarchive import (
    LayerFile,
    archive_image_names,
    render_archive,
    render_layer,
    write_archive,
)


def test_an_archive_names_its_image_and_holds_every_blob_it_points_to(tmp_path: Path) -> None:
    layer = render_layer(
        [LayerFile(path="bin", directory=True), LayerFile(path="bin/x", data=b"hi")]
    )
    assert (
        render_layer([LayerFile(path="bin", directory=True), LayerFile(path="bin/x", data=b"hi")])
        == layer
    )
    members = render_archive(name="kuberank.local/x:1", layers=[layer], config={"User": "1:1"})
    path = write_archive(tmp_path / "x.tar", members)
    assert archive_image_names(path) == ["kuberank.local/x:1"]
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        (entry,) = index["manifests"]
        manifest_path = "blobs/sha256/" + entry["digest"].removeprefix("sha256:")
        manifest = json.load(tar.extractfile(manifest_path))  # type: ignore[arg-type]
    for blob in [manifest["config"], *manifest["layers"]]:
        assert "blobs/sha256/" + blob["digest"].removeprefix("sha256:") in names
    assert "oci-layout" in names


def test_the_networks_stay_inside_the_benchmarking_range() -> None:
    allowed = ipaddress.ip_network(hostnetwork.ALLOWED_NETWORK)
    for network in (hostnetwork.POD_CIDR, hostnetwork.SERVICE_CIDR):
        assert ipaddress.ip_network(network).subnet_of(allowed)  # type: ignore[arg-type]
    for address in (
        hostnetwork.NODE_IP,
        hostnetwork.POD_GATEWAY,
        hostnetwork.KUBERNETES_SERVICE_IP,
    ):
        assert ipaddress.ip_address(address) in allowed
    assert len(hostnetwork.NODE_INTERFACE) <= 15
    assert len(hostnetwork.BRIDGE) <= 15


def test_containerd_keeps_everything_under_the_node_s_directories(tmp_path: Path) -> None:
    files = realnode.NodeFiles(tmp_path)
    config = tomllib.loads(realnode.render_containerd_config(files, sandbox_image="p:1"))
    assert Path(config["root"]).is_relative_to(files.root)
    assert Path(config["state"]).is_relative_to(files.root)
    assert config["grpc"]["address"] == str(files.socket)
    assert len(str(files.socket)) + len(".ttrpc") < 104
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    runc = cri["containerd"]["runtimes"]["runc"]["options"]
    assert runc["SystemdCgroup"] is False
    assert Path(runc["Root"]).is_relative_to(files.root)


def test_pods_get_a_default_route_to_the_host_and_no_masquerade(tmp_path: Path) -> None:
    (bridge,) = realnode.render_cni_config(realnode.NodeFiles(tmp_path))["plugins"]
    assert bridge["isDefaultGateway"] is True
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [
        [{"subnet": hostnetwork.POD_CIDR, "gateway": hostnetwork.POD_GATEWAY}]
    ]


def test_the_kubelet_is_tainted_authenticated_and_keeps_imported_images(tmp_path: Path) -> None:
    from localcluster.certificates import KeyPair, Pki

    pair = KeyPair(cert=tmp_path / "c", key=tmp_path / "k")
    pki = Pki(ca=pair, apiserver=pair, front_proxy_client=pair, clients={},
              service_account_key=tmp_path / "s", service_account_pub=tmp_path / "p")  # fmt: skip
    config = realnode.render_kubelet_config(
        realnode.NodeFiles(tmp_path), pki=pki, port=1, healthz_port=2, serving=(pair.cert, pair.key)
    )
    assert config["registerWithTaints"] == [realnode.TAINT]
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False


def test_kube_proxy_writes_no_sysctl_and_serves_node_ports_only_on_our_range(
    tmp_path: Path,
) -> None:
    config = realnode.render_kube_proxy_config(
        realnode.NodeFiles(tmp_path), healthz_port=1, metrics_port=2
    )
    assert config["mode"] == "iptables"
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["nodePortAddresses"] == [hostnetwork.ALLOWED_NETWORK]


def test_the_node_is_on_by_default_and_off_with_the_env(monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.delenv(realnode.ENABLE_ENV, raising=False)
    assert realnode.enabled_by_env()
    monkeypatch.setenv(realnode.ENABLE_ENV, "0")
    assert not realnode.enabled_by_env()
