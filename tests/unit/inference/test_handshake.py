"""The device handshake file the sidecar reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kuberank_inference.handshake import device_uuids, handshake_document, write_handshake


def test_document_follows_the_contract() -> None:
    doc = handshake_document(
        pid=42,
        device="cuda:0",
        environ={"CUDA_VISIBLE_DEVICES": "0"},
        uuids=["GPU-abc"],
        now=12.5,
    )
    assert doc == {
        "version": 1,
        "pid": 42,
        "device": "cuda",
        "cuda_visible_devices": "0",
        "uuids": ["GPU-abc"],
        "written_at": 12.5,
    }
    cpu = handshake_document(pid=1, device="cpu", environ={}, uuids=[], now=0.0)
    assert cpu["device"] == "cpu"
    assert cpu["cuda_visible_devices"] is None


def test_device_plugin_ids_win_over_the_framework() -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": "MIG-1234-abcd"}
    assert device_uuids(environ=env, framework_uuids=["GPU-x"], device="cuda:0") == [
        "MIG-1234-abcd"
    ]
    assert device_uuids(
        environ={"NVIDIA_VISIBLE_DEVICES": "all"}, framework_uuids=["GPU-x"], device="cuda"
    ) == ["GPU-x"]
    assert device_uuids(environ=env, framework_uuids=[], device="cpu") == []


def test_written_atomically_or_skipped(tmp_path: Path) -> None:
    target = tmp_path / "device.json"
    assert write_handshake(target, {"version": 1}, explicit=False)
    assert json.loads(target.read_text()) == {"version": 1}
    assert list(tmp_path.iterdir()) == [target]
    missing = tmp_path / "absent" / "device.json"
    assert not write_handshake(missing, {"version": 1}, explicit=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_handshake(missing, {"version": 1}, explicit=True)
