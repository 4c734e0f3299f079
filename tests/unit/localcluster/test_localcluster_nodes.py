"""Fake GPU node manifests carry the capacity and GFD labels real GPU nodes have."""

from __future__ import annotations

import pytest

from localcluster import nodes


def test_default_nodes_are_two_h100_nodes_and_one_mixed_mig_node() -> None:
    by_name = {n["metadata"]["name"]: n for n in nodes.default_nodes()}
    assert set(by_name) == {"gpu-h100-0", "gpu-h100-1", "gpu-mig-0"}
    for name in ("gpu-h100-0", "gpu-h100-1"):
        labels = by_name[name]["metadata"]["labels"]
        assert by_name[name]["status"]["capacity"]["nvidia.com/gpu"] == "8"
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert labels["nvidia.com/gpu.memory"] == "81559"
        assert labels["nvidia.com/gpu.count"] == "8"
        assert labels["nvidia.com/mig.strategy"] == "single"
    mig = by_name["gpu-mig-0"]
    assert mig["status"]["capacity"]["nvidia.com/mig-1g.10gb"] == "7"
    assert "nvidia.com/gpu" not in mig["status"]["capacity"]
    assert mig["metadata"]["labels"]["nvidia.com/mig.strategy"] == "mixed"
    assert mig["metadata"]["labels"]["nvidia.com/mig-1g.10gb.count"] == "7"


def test_every_node_is_managed_by_kwok_and_allocatable_equals_capacity() -> None:
    for node in nodes.default_nodes():
        assert node["metadata"]["annotations"] == {nodes.KWOK_NODE_ANNOTATION: "fake"}
        assert node["status"]["allocatable"] == node["status"]["capacity"]
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == node["metadata"]["name"]


def test_render_gpu_nodes_names_pools_and_labels_them() -> None:
    rendered = nodes.render_gpu_nodes(3, prefix="scale", gpus=2, labels={"team": "search"})
    assert [n["metadata"]["name"] for n in rendered] == ["scale-0", "scale-1", "scale-2"]
    for node in rendered:
        labels = node["metadata"]["labels"]
        assert labels[nodes.NODE_POOL_LABEL] == "scale"
        assert labels["team"] == "search"
        assert labels["nvidia.com/gpu.count"] == "2"
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"


def test_mig_profile_sets_slices_per_gpu_and_defaults_to_a100() -> None:
    (node,) = nodes.render_gpu_nodes(1, prefix="mig", gpus=2, mig_profile="3g.40gb")
    assert node["status"]["capacity"]["nvidia.com/mig-3g.40gb"] == "4"
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert node["metadata"]["labels"]["nvidia.com/mig-3g.40gb.count"] == "4"


def test_caller_labels_win_over_generated_ones() -> None:
    node = nodes.render_gpu_node(name="n", labels={"nvidia.com/gpu.product": "Tesla-T4"})
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "Tesla-T4"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mig_profile": "9g.99gb"}, "mig_profile='9g.99gb'.*1g.10gb"),
        ({"gpus": 0}, "gpus=0.*at least 1"),
        ({"prefix": "Bad_Name"}, "'Bad_Name-0' is not a DNS subdomain"),
        ({"count": 0}, "count=0"),
    ],
)
def test_bad_arguments_name_the_field_and_the_fix(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"count": 1, "prefix": "ok", **kwargs}
    with pytest.raises(ValueError, match=message):
        nodes.render_gpu_nodes(**arguments)  # type: ignore[arg-type]
