"""The pure parts of the monitoring stack harness: where it finds the Go-built
prometheus-operator and prometheus-adapter, how a pod's view of the operator's generated
Prometheus configuration is made, and how the adapter is registered."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from localcluster import metricsadapter, monitoringstack, toolchain

GENERATED = """
global:
  external_labels: {prometheus: monitoring/kps, prometheus_replica: $(POD_NAME)}
rule_files: [/etc/prometheus/rules/prometheus-kps-rulefiles-0/*.yaml]
scrape_configs:
  - job_name: podMonitor/ns/rr-kuberank/0
    kubernetes_sd_configs:
      - role: pod
        namespaces: {names: [ns]}
    tls_config: {ca_file: /etc/prometheus/certs/secret_ns_ca_ca.crt}
  - job_name: elsewhere
    kubernetes_sd_configs:
      - {role: pod, api_server: https://other:6443}
"""


def _access(tmp_path: Path) -> monitoringstack.InClusterAccess:
    return monitoringstack.InClusterAccess(
        api_server="https://127.0.0.1:6443",
        ca_file=tmp_path / "ca.crt",
        token_file=tmp_path / "token",
    )


def test_the_pods_view_of_the_generated_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = monitoringstack.prometheus_config_as_run(
        GENERATED, root=root, pod_name="prometheus-kps-0", access=_access(tmp_path)
    )
    assert config["global"]["external_labels"]["prometheus_replica"] == "prometheus-kps-0"
    assert config["rule_files"] == [
        f"{root}/etc/prometheus/rules/prometheus-kps-rulefiles-0/*.yaml"
    ]
    in_cluster, explicit = config["scrape_configs"]
    (sd,) = in_cluster["kubernetes_sd_configs"]
    assert sd == {
        "role": "pod",
        "namespaces": {"names": ["ns"]},
        "api_server": "https://127.0.0.1:6443",
        "authorization": {"credentials_file": str(tmp_path / "token")},
        "tls_config": {"ca_file": str(tmp_path / "ca.crt")},
    }
    assert in_cluster["tls_config"]["ca_file"].startswith(f"{root}/etc/prometheus/certs/")
    # an explicit api_server is left as the operator wrote it
    assert explicit["kubernetes_sd_configs"] == [
        {"role": "pod", "api_server": "https://other:6443"}
    ]


def test_everything_else_is_the_generated_config(tmp_path: Path) -> None:
    config = monitoringstack.prometheus_config_as_run(
        GENERATED, root=tmp_path, pod_name="p", access=_access(tmp_path)
    )
    original = yaml.safe_load(GENERATED)
    assert [j["job_name"] for j in config["scrape_configs"]] == [
        j["job_name"] for j in original["scrape_configs"]
    ]
    assert config.keys() == original.keys()


def test_crd_file_names_give_the_crd_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERANK_CACHE", str(tmp_path))
    version = toolchain.parse_versions(toolchain.VERSIONS_FILE.read_text())[
        "PROMETHEUS_OPERATOR_VERSION"
    ]
    directory = tmp_path / "bin" / f"prometheus-operator-{version}"
    (directory / "crds").mkdir(parents=True)
    (directory / "operator").write_text("#!/bin/sh\n")
    (directory / "operator").chmod(0o755)
    (directory / "crds" / "monitoring.coreos.com_podmonitors.yaml").write_text("{}\n")
    tools = monitoringstack.prometheus_operator_tools()
    assert tools.binary == directory / "operator"
    assert [c.name for c in tools.crds] == ["monitoring.coreos.com_podmonitors.yaml"]


def test_missing_builds_say_to_run_make_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERANK_CACHE", str(tmp_path))
    with pytest.raises(toolchain.ToolchainMissingError, match="make tools"):
        monitoringstack.prometheus_operator_tools()
    with pytest.raises(toolchain.ToolchainMissingError, match="make tools"):
        metricsadapter.prometheus_adapter_binary()


def test_the_adapter_is_reached_through_an_external_name_service() -> None:
    service, apiservice = metricsadapter.registration_objects(
        namespace="monitoring", port=6443, ca_bundle=b"PEM"
    )
    assert service["spec"] == {
        "type": "ExternalName",
        "externalName": "localhost",
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
    }
    spec = apiservice["spec"]
    assert isinstance(spec, dict)
    assert spec["service"] == {
        "name": "prometheus-adapter",
        "namespace": "monitoring",
        "port": 6443,
    }
    assert (spec["group"], spec["version"]) == ("custom.metrics.k8s.io", "v1beta2")
    assert base64.b64decode(spec["caBundle"]) == b"PEM"


def test_selectors_are_kube_prometheus_stacks() -> None:
    objects = monitoringstack.kube_prometheus_stack_objects(
        namespace="monitoring",
        release="kps",
        prometheus_version="v3.16.0",
        alertmanager_version="v0.25.0",
        alertmanager_address="127.0.0.1:9093",
    )
    prometheus = next(o for o in objects if o["kind"] == "Prometheus")["spec"]
    for selector in ("podMonitorSelector", "ruleSelector", "serviceMonitorSelector"):
        assert prometheus[selector] == {"matchLabels": {"release": "kps"}}
    alertmanager = next(o for o in objects if o["kind"] == "Alertmanager")["spec"]
    assert alertmanager["alertmanagerConfigSelector"] == {"matchLabels": {"release": "kps"}}
