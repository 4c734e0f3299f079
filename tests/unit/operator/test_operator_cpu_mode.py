"""--accelerator=none: pods that run the model on CPU, with the sidecar on its fake NVML backend,
for clusters without GPUs; everything else as in production."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kuberank_operator.cli import parse_config
from kuberank_operator.model import naming
from kuberank_operator.model.parsing import parse_spec
from kuberank_operator.model.specs import RerankerSpec
from kuberank_operator.reconcile.capacity import Capacity, cpu_capacity
from kuberank_operator.reconcile.statuses import Observed, compute_status, status_patch
from kuberank_operator.rendering.children import RenderOptions, render_deployment
from tests.unit.operator.conftest import defaulted_spec, minimal_spec
from tests.unit.operator.test_operator_rendering import OWNER, env_of

CPU = RenderOptions(accelerator="none")
GPU_NODE_SPEC: dict[str, Any] = {
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "inference"},
    "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "team", "operator": "Equal", "value": "search", "effect": "NoSchedule"},
    ],
    "gpu": {"powerLimitWatts": 300},
}


def spec_of(**extra: Any) -> RerankerSpec:
    return parse_spec(defaulted_spec(minimal_spec(**extra)))


def pod_of(spec: RerankerSpec, options: RenderOptions | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = render_deployment(OWNER, spec, options=options)["spec"]["template"][
        "spec"
    ]
    return pod


def by_name(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["containers"]}


def gpu_keys(obj: Any) -> list[str]:
    """Every key or string value anywhere in obj that names an nvidia.com/ resource or label."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if str(k).startswith("nvidia.com/"):
                found.append(str(k))
            found += gpu_keys(v)
    elif isinstance(obj, list):
        for item in obj:
            found += gpu_keys(item)
    elif isinstance(obj, str) and obj.startswith("nvidia.com/"):
        found.append(obj)
    return found


def test_default_is_nvidia_and_the_flag_reads_none() -> None:
    assert RenderOptions().accelerator == "nvidia"
    assert parse_config([], env={}).accelerator == "nvidia"
    assert parse_config(["--accelerator", "none"], env={}).accelerator == "none"
    assert parse_config([], env={"KUBERANK_ACCELERATOR": "none"}).accelerator == "none"


def test_an_unknown_accelerator_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--accelerator", "amd"], env={})
    assert "--accelerator" in capsys.readouterr().err


def test_cpu_pods_request_no_gpu_and_skip_gpu_nodes() -> None:
    spec = spec_of(**GPU_NODE_SPEC)
    pod = pod_of(spec, CPU)
    assert gpu_keys(pod) == [], "no GPU request, label, toleration or socket on CPU"
    assert pod["nodeSelector"] == {"pool": "inference"}
    assert pod["tolerations"] == [GPU_NODE_SPEC["tolerations"][1]]
    inference = by_name(pod)[naming.INFERENCE_CONTAINER]
    assert inference["resources"]["requests"]["cpu"] == "2", "the user's CPU request is kept"
    # In production the same spec asks for the GPU, selects and tolerates GPU nodes.
    gpu_pod = pod_of(spec)
    assert "nvidia.com/gpu" in gpu_keys(gpu_pod)
    assert "nvidia.com/gpu.product" in gpu_pod["nodeSelector"]


def test_cpu_inference_server_and_fake_sidecar() -> None:
    spec = spec_of(**GPU_NODE_SPEC)
    containers = by_name(pod_of(spec, CPU))
    inference_env = env_of(containers[naming.INFERENCE_CONTAINER])
    assert inference_env["KUBERANK_DEVICE"] == "cpu"
    sidecar = containers[naming.SIDECAR_CONTAINER]
    env = env_of(sidecar)
    assert env["KUBERANK_BACKEND"] == "fake"
    assert env["KUBERANK_DEVICES"] == "0"
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    # Tuning a fake card needs no root, no CAP_SYS_ADMIN and no kubelet socket.
    assert env["KUBERANK_POWER_LIMIT_WATTS"] == "300"
    assert env["KUBERANK_TUNING_ASSUME_EXCLUSIVE"] == "true"
    assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    opted_in = pod_of(spec, RenderOptions(accelerator="none", sidecar_pod_resources=True))
    assert all("hostPath" not in v for v in opted_in["volumes"])


def _strip_accelerator(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod without what --accelerator changes, to compare the rest."""
    pod = copy.deepcopy(pod)
    pod.pop("nodeSelector", None)
    pod.pop("tolerations", None)
    pod["volumes"] = [v for v in pod["volumes"] if "hostPath" not in v]
    for c in pod["containers"]:
        c.pop("resources", None)
        c.pop("securityContext", None)
        c["env"] = [
            e
            for e in c["env"]
            if e["name"]
            not in {
                "KUBERANK_DEVICE",
                "KUBERANK_BACKEND",
                "KUBERANK_FAKE_PROFILE",
                "KUBERANK_DEVICES",
                "KUBERANK_TUNING_ASSUME_EXCLUSIVE",
                "KUBERANK_POD_RESOURCES_SOCKET",
                "NVIDIA_VISIBLE_DEVICES",
                "NVIDIA_DRIVER_CAPABILITIES",
            }
        ]
        c["volumeMounts"] = [m for m in c["volumeMounts"] if "pod-resources" not in m["mountPath"]]
    return pod


def test_everything_else_is_as_in_production() -> None:
    spec = spec_of(**GPU_NODE_SPEC)
    assert _strip_accelerator(pod_of(spec, CPU)) == _strip_accelerator(pod_of(spec))
    cpu = by_name(pod_of(spec, CPU))[naming.INFERENCE_CONTAINER]
    assert cpu["securityContext"]["readOnlyRootFilesystem"] is True
    assert cpu["securityContext"]["runAsNonRoot"] is True


def test_cpu_env_is_accepted_by_the_inference_server_and_the_sidecar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kuberank_inference.config import parse_config as inference_config

    containers = by_name(pod_of(spec_of(**GPU_NODE_SPEC), CPU))
    env = {
        k: v
        for k, v in env_of(containers[naming.INFERENCE_CONTAINER]).items()
        if k.startswith("KUBERANK_") and isinstance(v, str)
    }
    assert inference_config([], env).device == "cpu"
    for name, value in env_of(containers[naming.SIDECAR_CONTAINER]).items():
        if name.startswith("KUBERANK_"):
            monkeypatch.setenv(name, value if isinstance(value, str) else "downward-api-value")
    from kuberank_sidecar.settings import read_settings

    settings = read_settings({})
    assert settings.backend == "fake"
    assert settings.devices == "0"
    assert settings.tuning_assume_exclusive is True


def observed(accelerator: str, capacity: Capacity) -> Observed:
    return Observed(
        name="bge",
        generation=1,
        spec=spec_of(),
        deployment=None,
        pods=(),
        capacity=capacity,
        accelerator=accelerator,  # type: ignore[arg-type]
    )


def test_status_shows_the_accelerator() -> None:
    short = Capacity(resource_name="nvidia.com/gpu", needed=1, free=0, matching_nodes=0)
    gpu = compute_status(observed("nvidia", short))
    assert gpu.accelerator == "nvidia.com/gpu"
    assert gpu.state == "CapacityLimited"
    cpu = compute_status(observed("none", cpu_capacity()))
    assert cpu.accelerator == "cpu"
    assert cpu.state == "Progressing", "no GPU to be short of"
    capacity = next(c for c in cpu.conditions if c.type == "CapacityLimited")
    assert (capacity.status, capacity.reason) == ("False", "NoAccelerator")
    assert "--accelerator=none" in capacity.message
    patch = status_patch(cpu, previous=None, now="2026-01-01T00:00:00Z")
    assert patch["accelerator"] == "cpu"
