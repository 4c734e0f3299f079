"""kwok stages: fast lifecycle, custom-status pods left to the test except for deletion."""

from __future__ import annotations

from typing import Any

import pytest

from localcluster import stages


def _by_name() -> dict[str, dict[str, Any]]:
    return {s["metadata"]["name"]: s for s in stages.render_stages()}


def _keys(stage: dict[str, Any]) -> list[str]:
    return [e["key"] for e in stage["spec"]["selector"]["matchExpressions"]]


def test_node_and_pod_stages_are_all_present() -> None:
    rendered = _by_name()
    assert set(rendered) == {
        "node-initialize",
        "node-heartbeat",
        "pod-ready",
        "pod-complete",
        "pod-delete",
    }
    kinds = {name: s["spec"]["resourceRef"]["kind"] for name, s in rendered.items()}
    assert kinds["node-initialize"] == kinds["node-heartbeat"] == "Node"
    assert {kinds["pod-ready"], kinds["pod-complete"], kinds["pod-delete"]} == {"Pod"}


def test_custom_status_pods_are_skipped_by_ready_and_complete_but_still_deleted() -> None:
    rendered = _by_name()
    custom_key = f'.metadata.annotations["{stages.CUSTOM_STATUS_ANNOTATION}"]'
    assert custom_key in _keys(rendered["pod-ready"])
    assert custom_key in _keys(rendered["pod-complete"])
    assert custom_key not in _keys(rendered["pod-delete"])
    assert rendered["pod-delete"]["spec"]["next"] == {"delete": True}


def test_pod_ready_is_immediate_and_assigns_pod_ips() -> None:
    ready = _by_name()["pod-ready"]["spec"]
    assert "delay" not in ready
    assert "PodIPsWith" in ready["next"]["statusTemplate"]
    assert "phase: Running" in ready["next"]["statusTemplate"]


def test_heartbeat_delay_is_configurable_with_jitter() -> None:
    heartbeat = {s["metadata"]["name"]: s for s in stages.render_stages(node_heartbeat_ms=5000)}
    delay = heartbeat["node-heartbeat"]["spec"]["delay"]
    assert delay == {"durationMilliseconds": 5000, "jitterDurationMilliseconds": 5500}


def test_too_frequent_heartbeat_is_rejected_with_the_limit() -> None:
    with pytest.raises(ValueError, match=r"node_heartbeat_ms=10\b.*1000"):
        stages.render_stages(node_heartbeat_ms=10)
