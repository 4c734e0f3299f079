"""Fake GPU node manifests, labelled as NVIDIA GPU feature discovery (GFD) labels real nodes.

Pure: every function returns plain dicts that `kubectl create -f -` accepts. kwok manages the
nodes because of the `kwok.x-k8s.io/node: fake` annotation; their capacity is what the real
scheduler counts against.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_POOL_LABEL = "kuberank.dev/node-pool"
DEFAULT_POOL = "default"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True, kw_only=True)
class GpuModel:
    """What GFD reports for one GPU product."""

    product: str
    memory_mib: int
    family: str
    compute_major: int
    compute_minor: int


@dataclass(frozen=True, kw_only=True)
class MigProfile:
    """One MIG profile of an 80 GB A100/H100: how many fit on a GPU and what each offers."""

    name: str
    per_gpu: int
    memory_mib: int
    multiprocessors: int
    slices_gi: int
    slices_ci: int

    @property
    def resource(self) -> str:
        return f"nvidia.com/mig-{self.name}"


H100_80GB_HBM3 = GpuModel(
    product="NVIDIA-H100-80GB-HBM3",
    memory_mib=81559,
    family="hopper",
    compute_major=9,
    compute_minor=0,
)
A100_SXM4_80GB = GpuModel(
    product="NVIDIA-A100-SXM4-80GB",
    memory_mib=81920,
    family="ampere",
    compute_major=8,
    compute_minor=0,
)

# The profiles of an 80 GB A100 (H100 offers the same set plus 1g.20gb):
# name, instances per GPU, memory MiB, multiprocessors, GPU (and compute) slices.
_MIG_TABLE = (
    ("1g.10gb", 7, 9728, 14, 1),
    ("2g.20gb", 3, 19968, 28, 2),
    ("3g.40gb", 2, 40192, 42, 3),
    ("4g.40gb", 1, 40192, 56, 4),
    ("7g.80gb", 1, 80384, 98, 7),
)
MIG_PROFILES: dict[str, MigProfile] = {
    name: MigProfile(
        name=name,
        per_gpu=per_gpu,
        memory_mib=memory,
        multiprocessors=sms,
        slices_gi=slices,
        slices_ci=slices,
    )
    for name, per_gpu, memory, sms, slices in _MIG_TABLE
}

# Room for many fake pods per node; CPU and memory are never the scarce resource here.
NODE_CPU = "192"
NODE_MEMORY = "2Ti"
NODE_PODS = "250"
NODE_EPHEMERAL_STORAGE = "4Ti"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_NODE_NAME = 253


def gfd_labels(*, model: GpuModel, gpus: int, mig: MigProfile | None) -> dict[str, str]:
    """The labels GPU feature discovery sets for `gpus` GPUs of `model` (MIG mixed if `mig`)."""
    labels = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": model.product,
        "nvidia.com/gpu.memory": str(model.memory_mib),
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.family": model.family,
        "nvidia.com/gpu.compute.major": str(model.compute_major),
        "nvidia.com/gpu.compute.minor": str(model.compute_minor),
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "single" if mig is None else "mixed",
    }
    if mig is not None:
        prefix = f"nvidia.com/mig-{mig.name}"
        labels |= {
            f"{prefix}.count": str(mig.per_gpu * gpus),
            f"{prefix}.memory": str(mig.memory_mib),
            f"{prefix}.multiprocessors": str(mig.multiprocessors),
            f"{prefix}.slices.gi": str(mig.slices_gi),
            f"{prefix}.slices.ci": str(mig.slices_ci),
            f"{prefix}.product": f"{model.product}-MIG-{mig.name}",
        }
    return labels


def gpu_capacity(*, gpus: int, mig: MigProfile | None) -> dict[str, str]:
    """Extended resources the device plugin would advertise (mixed MIG: slices, not GPUs)."""
    if mig is None:
        return {GPU_RESOURCE: str(gpus)}
    return {mig.resource: str(mig.per_gpu * gpus)}


def render_gpu_node(
    *,
    name: str,
    gpus: int = 8,
    model: GpuModel = H100_80GB_HBM3,
    mig_profile: str | None = None,
    pool: str = DEFAULT_POOL,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Node that kwok manages, with GPU capacity and GFD labels; `labels` are added last."""
    _check_name(name)
    if gpus < 1:
        raise ValueError(f"gpus={gpus}: a GPU node needs at least 1 GPU; pass gpus=1 or more")
    mig = _mig(mig_profile)
    capacity = {
        "cpu": NODE_CPU,
        "memory": NODE_MEMORY,
        "pods": NODE_PODS,
        "ephemeral-storage": NODE_EPHEMERAL_STORAGE,
        **gpu_capacity(gpus=gpus, mig=mig),
    }
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        NODE_POOL_LABEL: pool,
        **gfd_labels(model=model, gpus=gpus, mig=mig),
        **(labels or {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": node_labels,
        },
        # Nodes accept status on create (as a kubelet registers): the scheduler reads it at once.
        "status": {"capacity": dict(capacity), "allocatable": dict(capacity)},
    }


def render_gpu_nodes(
    count: int,
    *,
    prefix: str,
    gpus: int = 8,
    labels: Mapping[str, str] | None = None,
    mig_profile: str | None = None,
    model: GpuModel | None = None,
) -> list[dict[str, Any]]:
    """`count` nodes named `<prefix>-<i>` in pool `prefix` (A100 for MIG, else H100)."""
    if count < 1:
        raise ValueError(f"count={count}: add at least 1 node; pass count=1 or more")
    chosen = model or (A100_SXM4_80GB if mig_profile else H100_80GB_HBM3)
    return [
        render_gpu_node(
            name=f"{prefix}-{i}",
            gpus=gpus,
            model=chosen,
            mig_profile=mig_profile,
            pool=prefix,
            labels=labels,
        )
        for i in range(count)
    ]


def default_nodes() -> list[dict[str, Any]]:
    """The shared nodes every cluster starts with: two 8×H100 nodes and one mixed-MIG A100."""
    return [
        render_gpu_node(name="gpu-h100-0"),
        render_gpu_node(name="gpu-h100-1"),
        render_gpu_node(name="gpu-mig-0", gpus=1, model=A100_SXM4_80GB, mig_profile="1g.10gb"),
    ]


def _mig(mig_profile: str | None) -> MigProfile | None:
    if mig_profile is None:
        return None
    try:
        return MIG_PROFILES[mig_profile]
    except KeyError:
        known = ", ".join(MIG_PROFILES)
        raise ValueError(
            f"mig_profile={mig_profile!r} is not a MIG profile of an 80 GB A100/H100; "
            f"use one of: {known}"
        ) from None


def _check_name(name: str) -> None:
    parts = name.split(".")
    if len(name) > _MAX_NODE_NAME or not all(_DNS_LABEL.match(p) and len(p) <= 63 for p in parts):
        raise ValueError(
            f"node name {name!r} is not a DNS subdomain (lower-case letters, digits, '-', '.'; "
            f"at most {_MAX_NODE_NAME} characters); choose a prefix like 'scale-a'"
        )
