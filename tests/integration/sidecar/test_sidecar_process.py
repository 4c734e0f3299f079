"""The real sidecar process: SIGTERM restores the card; a SIGKILLed predecessor is detected."""

from __future__ import annotations

import json
import signal
from pathlib import Path

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
