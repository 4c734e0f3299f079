"""Rendering the Deployment, Service and PodDisruptionBudget of one RerankerDeployment."""

from __future__ import annotations

from typing import Any

import pytest

from kuberank_operator.model import naming
from kuberank_operator.model.naming import Owner
from kuberank_operator.model.parsing import parse_spec
from kuberank_operator.model.specs import RerankerSpec
from kuberank_operator.rendering.children import (
    RenderOptions,
    content_hash,
    render_children,
    render_deployment,
    render_pdb,
    render_service,
)
from tests.unit.operator.conftest import defaulted_spec, minimal_spec

OWNER = Owner(namespace="search", name="bge", uid="0b1c-uid", generation=3)


def spec_of(**extra: Any) -> RerankerSpec:
    return parse_spec(defaulted_spec(minimal_spec(**extra)))


def containers(spec: RerankerSpec, **kw: Any) -> dict[str, dict[str, Any]]:
    pod = render_deployment(OWNER, spec, **kw)["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def gpu_counts(container: dict[str, Any]) -> dict[str, Any]:
    res = container.get("resources") or {}
    return {
        k: v
        for part in ("requests", "limits")
        for k, v in (res.get(part) or {}).items()
        if k.startswith("nvidia.com/")
    }


@pytest.mark.parametrize("resource", ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"])
def test_each_pod_requests_exactly_one_device(resource: str) -> None:
    spec = spec_of(replicas=3, gpu={"resourceName": resource})
    c = containers(spec)
    inference = c[naming.INFERENCE_CONTAINER]["resources"]
    assert inference["requests"][resource] == 1
    assert inference["limits"][resource] == 1
    assert gpu_counts(c[naming.SIDECAR_CONTAINER]) == {}
    others = [k for k in inference["limits"] if k.startswith("nvidia.com/") and k != resource]
    assert others == []
    assert inference["requests"]["cpu"] == "2", "the user's CPU request is kept"
    assert render_deployment(OWNER, spec)["spec"]["replicas"] == 3


def test_sidecar_gets_sys_admin_only_when_tuning() -> None:
    plain = containers(spec_of())[naming.SIDECAR_CONTAINER]["securityContext"]
    assert plain["capabilities"] == {"drop": ["ALL"]}
    assert plain["runAsNonRoot"] is True
    tuned = containers(spec_of(gpu={"powerLimitWatts": 300}))
    caps = tuned[naming.SIDECAR_CONTAINER]["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    inference_caps = tuned[naming.INFERENCE_CONTAINER]["securityContext"]["capabilities"]
    assert inference_caps == {"drop": ["ALL"]}
    clocks = containers(
        spec_of(gpu={"lockedClocks": {"graphicsMinMHz": 1000, "graphicsMaxMHz": 1500}})
    )
    assert "add" in clocks[naming.SIDECAR_CONTAINER]["securityContext"]["capabilities"]


def test_tuning_env_and_pod_resources_socket() -> None:
    spec = spec_of(
        gpu={
            "powerLimitWatts": 300,
            "lockedClocks": {"graphicsMinMHz": 1410, "graphicsMaxMHz": 1755, "memoryMHz": 2619},
        }
    )
    sidecar = containers(spec)[naming.SIDECAR_CONTAINER]
    env = env_of(sidecar)
    assert env["KUBERANK_POWER_LIMIT_WATTS"] == "300"
    assert env["KUBERANK_GPU_LOCKED_CLOCKS"] == "1410:1755"
    assert env["KUBERANK_MEMORY_LOCKED_CLOCKS"] == "2619:2619"
    # Tuning must be able to prove the GPU is not shared: the kubelet socket is mounted.
    assert any(m["mountPath"] == "/var/lib/kubelet/pod-resources" for m in sidecar["volumeMounts"])
    untuned = containers(spec_of())[naming.SIDECAR_CONTAINER]
    assert "KUBERANK_POWER_LIMIT_WATTS" not in env_of(untuned)
    assert all(m["mountPath"] != "/var/lib/kubelet/pod-resources" for m in untuned["volumeMounts"])
    opted_in = containers(spec_of(), options=RenderOptions(sidecar_pod_resources=True))
    assert "KUBERANK_POD_RESOURCES_SOCKET" in env_of(opted_in[naming.SIDECAR_CONTAINER])


def test_handshake_volume_is_shared_and_probes_are_set() -> None:
    deployment = render_deployment(OWNER, spec_of())
    pod = deployment["spec"]["template"]["spec"]
    c = {x["name"]: x for x in pod["containers"]}
    volume = next(v for v in pod["volumes"] if "emptyDir" in v and v["name"] == "device-handshake")
    for name in (naming.INFERENCE_CONTAINER, naming.SIDECAR_CONTAINER):
        mounts = {m["name"]: m["mountPath"] for m in c[name]["volumeMounts"]}
        assert mounts[volume["name"]] == "/var/run/kuberank"
        assert env_of(c[name])["KUBERANK_DEVICE_HANDSHAKE_FILE"] == "/var/run/kuberank/device.json"
    inference = c[naming.INFERENCE_CONTAINER]
    assert inference["ports"][0]["containerPort"] == 8080
    assert inference["startupProbe"]["httpGet"]["path"] == "/ready"
    assert inference["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert inference["livenessProbe"]["httpGet"]["path"] == "/health"
    sidecar = c[naming.SIDECAR_CONTAINER]
    assert sidecar["ports"][0]["containerPort"] == 9400
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "gpu-metrics"}
    assert "readinessProbe" not in sidecar


def test_sidecar_knows_its_pod_from_the_downward_api() -> None:
    env = env_of(containers(spec_of())[naming.SIDECAR_CONTAINER])
    for name in ("POD_NAME", "KUBERANK_POD_NAME"):
        assert env[name] == {"fieldRef": {"fieldPath": "metadata.name"}}
    for name in ("POD_NAMESPACE", "KUBERANK_POD_NAMESPACE"):
        assert env[name] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_sidecar_can_be_turned_off() -> None:
    c = containers(spec_of(sidecar={"enabled": False}))
    assert list(c) == [naming.INFERENCE_CONTAINER]


def test_inference_env_carries_the_spec() -> None:
    spec = spec_of(
        batching={"maxBatchTokens": 8192, "maxClientBatchSize": 64},
        apiAuth={"secretName": "api", "key": "tok"},
    )
    env = env_of(containers(spec)[naming.INFERENCE_CONTAINER])
    assert env["KUBERANK_MODEL"] == "/models/bge-reranker-v2-m3"
    assert env["KUBERANK_MODEL_ID"] == "BAAI/bge-reranker-v2-m3"
    assert env["KUBERANK_DEVICE"] == "cuda"
    assert env["KUBERANK_MAX_BATCH_TOKENS"] == "8192"
    assert env["KUBERANK_MAX_CLIENT_BATCH_SIZE"] == "64"
    assert env["KUBERANK_API_TOKEN"] == {"secretKeyRef": {"name": "api", "key": "tok"}}
    assert env["HF_HUB_OFFLINE"] == "1"


def test_by_default_the_server_calibrates_its_budget_and_batches_in_flight() -> None:
    env = env_of(containers(spec_of())[naming.INFERENCE_CONTAINER])
    for chosen_by_the_server in (
        "KUBERANK_CALIBRATION",
        "KUBERANK_MAX_BATCH_TOKENS",
        "KUBERANK_BATCHES_IN_FLIGHT",
        "KUBERANK_TOKENIZATION_WORKERS",
        "KUBERANK_CALIBRATION_SECONDS",
        "KUBERANK_CALIBRATION_BUDGETS",
        "KUBERANK_CALIBRATION_BATCHES_IN_FLIGHT",
        "KUBERANK_TOKENIZER_PROCESSES",
    ):
        assert chosen_by_the_server not in env


def test_batching_fields_set_in_the_spec_reach_the_server() -> None:
    spec = spec_of(
        batching={
            "maxBatchTokens": 32768,
            "batchesInFlight": 3,
            "tokenizationWorkers": 6,
            "tokenizerProcesses": False,
            "calibration": {
                "mode": "on",
                "timeLimitSeconds": 8,
                "budgets": [1024, 2048],
                "batchesInFlight": [1, 2],
            },
        }
    )
    env = env_of(containers(spec)[naming.INFERENCE_CONTAINER])
    assert env["KUBERANK_MAX_BATCH_TOKENS"] == "32768"
    assert env["KUBERANK_BATCHES_IN_FLIGHT"] == "3"
    assert env["KUBERANK_TOKENIZATION_WORKERS"] == "6"
    assert env["KUBERANK_TOKENIZER_PROCESSES"] == "off"
    assert env["KUBERANK_CALIBRATION"] == "on"
    assert env["KUBERANK_CALIBRATION_SECONDS"] == "8.0"
    assert env["KUBERANK_CALIBRATION_BUDGETS"] == "1024,2048"
    assert env["KUBERANK_CALIBRATION_BATCHES_IN_FLIGHT"] == "1,2"
    from kuberank_inference.config import parse_config

    config = parse_config([], {k: v for k, v in env.items() if isinstance(v, str)})
    assert config.fixed_max_batch_tokens == 32768
    assert config.fixed_batches_in_flight == 3
    assert config.tokenization_workers == 6
    assert config.tokenizer_processes == "off"
    assert config.calibrates()
    assert config.calibration_seconds == 8.0
    assert config.calibration_budgets == (1024, 2048)
    assert config.calibration_batches_in_flight == (1, 2)


def test_calibration_can_be_turned_off() -> None:
    spec = spec_of(batching={"calibration": {"mode": "off"}})
    env = env_of(containers(spec)[naming.INFERENCE_CONTAINER])
    assert env["KUBERANK_CALIBRATION"] == "off"


@pytest.mark.parametrize(
    ("source", "volume_key"),
    [
        ({"pvc": {"claimName": "m", "path": "x"}}, "persistentVolumeClaim"),
        ({"hostPath": {"path": "/srv/m"}}, "hostPath"),
        ({"image": {"reference": "reg/m:1"}}, "image"),
    ],
)
def test_model_sources(source: dict[str, Any], volume_key: str) -> None:
    spec = parse_spec(defaulted_spec({"model": {"id": "m", "source": source}}))
    pod = render_deployment(OWNER, spec)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "models")
    assert volume_key in volume
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
    assert mount == {"name": "models", "mountPath": "/models", "readOnly": True}


def test_selectors_labels_and_owner_references_agree() -> None:
    spec = spec_of()
    deployment = render_deployment(OWNER, spec)
    service = render_service(OWNER, spec)
    pdb = render_pdb(OWNER, spec)
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"] == selector
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    for obj in (deployment, service, pdb):
        [ref] = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == OWNER.uid
        assert ref["controller"] is True
        assert ref["kind"] == naming.KIND
        assert obj["metadata"]["namespace"] == "search"
        assert obj["metadata"]["labels"][naming.LABEL_MANAGED_BY] == naming.MANAGED_BY
    assert naming.selector_string("bge") == "kuberank.dev/rerankerdeployment=bge"


def test_rollout_spread_and_pdb() -> None:
    spec = spec_of(rollout={"maxSurge": 1, "maxUnavailable": "25%"}, nodeSelector={"pool": "a"})
    deployment = render_deployment(OWNER, spec)
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": 1, "maxUnavailable": "25%"}
    pod = deployment["spec"]["template"]["spec"]
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert pod["nodeSelector"] == {"pool": "a"}
    assert render_pdb(OWNER, spec)["spec"]["maxUnavailable"] == "25%"
    default = render_deployment(OWNER, spec_of())["spec"]["strategy"]["rollingUpdate"]
    assert default == {"maxSurge": 0, "maxUnavailable": 1}


def test_children_carry_a_hash_that_follows_the_spec() -> None:
    first = render_children(OWNER, spec_of())
    again = render_children(OWNER, spec_of())
    scaled = render_children(OWNER, spec_of(replicas=2))
    kinds = [o["kind"] for o in first]
    assert kinds == ["Deployment", "Service", "PodDisruptionBudget"]
    digests = [o["metadata"]["annotations"][naming.ANNOTATION_APPLIED_HASH] for o in first]
    assert digests == [o["metadata"]["annotations"][naming.ANNOTATION_APPLIED_HASH] for o in again]
    assert scaled[0]["metadata"]["annotations"] != first[0]["metadata"]["annotations"]
    assert scaled[1]["metadata"]["annotations"] == first[1]["metadata"]["annotations"]
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})


def test_inference_env_is_accepted_by_the_inference_server() -> None:
    """Every KUBERANK_* variable the operator sets is a real flag of kuberank-inference."""
    from kuberank_inference.config import build_parser, parse_config

    spec = spec_of(apiAuth={"secretName": "api"})
    env = {
        k: v
        for k, v in env_of(containers(spec)[naming.INFERENCE_CONTAINER]).items()
        if k.startswith("KUBERANK_") and isinstance(v, str)
    }
    flags = set(build_parser({})._option_string_actions)
    rendered = set(env_of(containers(spec)[naming.INFERENCE_CONTAINER]))
    for name in rendered:
        if name.startswith("KUBERANK_"):
            assert "--" + name.removeprefix("KUBERANK_").lower().replace("_", "-") in flags, name
    config = parse_config([], env)
    assert config.max_input_length == spec.model.max_length
    assert config.device == "cuda"
    assert config.port == 8080


def test_sidecar_env_is_accepted_by_the_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every KUBERANK_* variable the operator sets is a real flag of kuberank-sidecar."""
    from kuberank_sidecar import cli as sidecar_cli

    spec = spec_of(
        gpu={
            "powerLimitWatts": 300,
            "lockedClocks": {"graphicsMinMHz": 1410, "graphicsMaxMHz": 1755, "memoryMHz": 2619},
        }
    )
    env = env_of(containers(spec)[naming.SIDECAR_CONTAINER])
    flags = set(sidecar_cli.build_parser()._option_string_actions)
    for name, value in env.items():
        if not name.startswith("KUBERANK_"):
            continue
        assert "--" + name.removeprefix("KUBERANK_").lower().replace("_", "-") in flags, name
        monkeypatch.setenv(name, value if isinstance(value, str) else "downward-api-value")
    config = sidecar_cli.config_from_args(sidecar_cli.build_parser().parse_args([]))
    assert config.tuning.power_limit_w == 300
    assert config.tuning.gpu_clocks is not None
    assert config.tuning.gpu_clocks.max_mhz == 1755
    assert config.tuning.memory_clocks is not None


def test_the_sidecar_runs_the_operators_image_never_the_resources() -> None:
    """spec.image picks the inference container's image only: with tuning the sidecar is root
    with CAP_SYS_ADMIN, so its image is the operator's (--sidecar-image)."""
    spec = spec_of(
        image={"repository": "registry.example.com/team/inference", "tag": "7"},
        gpu={"powerLimitWatts": 300},
    )
    options = RenderOptions(
        sidecar_image="registry.example.com/kuberank/kuberank:0.2.0",
        sidecar_image_pull_policy="Always",
    )
    rendered = containers(spec, options=options)
    assert rendered[naming.INFERENCE_CONTAINER]["image"] == "registry.example.com/team/inference:7"
    sidecar = rendered[naming.SIDECAR_CONTAINER]
    assert sidecar["image"] == "registry.example.com/kuberank/kuberank:0.2.0"
    assert sidecar["imagePullPolicy"] == "Always"
    assert sidecar["securityContext"]["capabilities"]["add"] == ["SYS_ADMIN"]
