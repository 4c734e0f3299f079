"""The real sidecar process: SIGTERM restores the card; a SIGKILLed predecessor is detected."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from kuberank_sidecar.fake_gpm import FULL_LOAD
from kuberank_sidecar.fake_nvml import fake_uuid
from tests.integration.sidecar.sidecar_process import get, running_sidecar

GPU0 = fake_uuid("h100x1", 0)


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--backend", "fake", "--fake-profile", "h100x1", "--devices", "0", "--interval", "0.2",
        "--fake-settings-file", str(tmp_path / "card.json"),
        "--tuning-journal", str(tmp_path / "journal.json"),
        "--tuning-assume-exclusive", *extra,
    ]  # fmt: skip


def _card(tmp_path: Path) -> dict[str, object]:
    return dict(json.loads((tmp_path / "card.json").read_text())[GPU0])


def test_sigterm_restores_power_limit_and_clocks(tmp_path: Path) -> None:
    args = _args(tmp_path, "--power-limit-watts", "450", "--gpu-locked-clocks", "1200:1800")
    with running_sidecar(args, log=tmp_path / "log") as (proc, base):
        tuning = json.loads(get(base + "/tuning"))
        assert tuning["state"] == "applied"
        assert _card(tmp_path) == {
            "power_limit_w": 450.0,
            "gpu_clocks": [1200, 1800],
            "memory_clocks": None,
        }
        metrics = get(base + "/metrics")
        assert "kuberank_gpu_locked_clock_max_mhz{" in metrics
        assert "kuberank_gpu_power_limit_watts{" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert _card(tmp_path) == {"power_limit_w": 700.0, "gpu_clocks": None, "memory_clocks": None}
    assert not (tmp_path / "journal.json").exists()


def test_restart_after_sigkill_reports_and_restores_the_predecessors_settings(
    tmp_path: Path,
) -> None:
    with running_sidecar(_args(tmp_path, "--power-limit-watts", "300"), log=tmp_path / "log1") as (
        proc,
        _,
    ):
        proc.kill()
        proc.wait(10)
    assert _card(tmp_path)["power_limit_w"] == 300.0
    with running_sidecar(_args(tmp_path), log=tmp_path / "log2") as (proc, base):
        report = json.loads(get(base + "/tuning"))
        assert report["state"] == "restored"
        assert "did not restore" in report["gpus"][0]["plan"]["inherited"][0]
        assert _card(tmp_path)["power_limit_w"] == 700.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert "left settings it did not restore" in (tmp_path / "log2").read_text()


def test_denied_tuning_keeps_exporting(tmp_path: Path) -> None:
    args = [*_args(tmp_path, "--power-limit-watts", "450")]
    args[args.index("h100x1")] = "h100x1-no-permission"
    with running_sidecar(args, log=tmp_path / "log") as (proc, base):
        assert json.loads(get(base + "/tuning"))["state"] == "denied"
        metrics = get(base + "/metrics")
        assert 'state="denied",reason="no_permission"' in metrics
        assert "DCGM_FI_DEV_GPU_UTIL{" in metrics
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    denied = [ln for ln in (tmp_path / "log").read_text().splitlines() if "tuning denied" in ln]
    assert len(denied) == 1
    assert "CAP_SYS_ADMIN" in denied[0]


def _metric(text: str, name: str) -> dict[str, float]:
    """Sample values of one family by its `gpu` label ("" without one)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            gpu = labels.split('gpu="', 1)[1].split('"', 1)[0] if 'gpu="' in labels else ""
            out[gpu] = float(value)
    return out


def _wait_metric(base: str, name: str, predicate, timeout: float = 30.0) -> dict[str, float]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        found = _metric(get(base + "/metrics"), name)
        if predicate(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never matched; last: {found}")
        time.sleep(0.1)


def test_profiling_metrics_follow_the_fake_load_between_polls(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"gpus": {"0": {"load": 0.0}}}))
    args = _args(tmp_path, "--fake-state-file", str(state))
    with running_sidecar(args, log=tmp_path / "log") as (proc, base):
        idle = _wait_metric(base, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", lambda m: "0" in m)
        assert idle["0"] == 0.0
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"gpus": {"0": {"load": 0.9}}}))
        tmp.replace(state)
        busy = _wait_metric(
            base, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", lambda m: m.get("0", 0.0) > 0.5
        )
        assert busy["0"] == pytest.approx(0.9 * FULL_LOAD["tensor_active"][1])
        metrics = get(base + "/metrics")
        assert "# TYPE DCGM_FI_PROF_SM_ACTIVE gauge" in metrics
        assert "# TYPE DCGM_FI_PROF_PCIE_TX_BYTES gauge" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_a_gpu_without_gpm_exports_no_profiling_metrics(tmp_path: Path) -> None:
    mig = fake_uuid("a100-mig-1g.10gb", 0, prefix="MIG")
    args = [
        "--backend", "fake", "--fake-profile", "a100-mig-1g.10gb", "--devices", mig,
        "--interval", "0.2", "--tuning-journal", "",
    ]  # fmt: skip
    with running_sidecar(args, log=tmp_path / "log") as (proc, base):
        _wait_metric(base, "kuberank_gpu_poll_duration_seconds", lambda m: bool(m))
        time.sleep(0.6)  # a few polls: a second sample would have produced a reading
        metrics = get(base + "/metrics")
        assert "DCGM_FI_DEV_FB_USED{" in metrics
        assert "DCGM_FI_PROF" not in metrics
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    logged = [ln for ln in (tmp_path / "log").read_text().splitlines() if "GPM" in ln]
    assert len(logged) == 1
