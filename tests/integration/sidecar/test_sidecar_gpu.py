"""The real NVML adapter on a real GPU: read-only, and tuning only as a dry run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kuberank_sidecar.cli import main
from kuberank_sidecar.collection import ExportContext, TelemetryView, render_families
from kuberank_sidecar.exposition import render_text
from kuberank_sidecar.records import DeviceSample, OwnedDevice

pytestmark = pytest.mark.gpu


@pytest.fixture
def nvml() -> Iterator[Any]:
    from kuberank_sidecar.nvml_adapter import RealNvml

    backend = RealNvml()
    backend.open()
    yield backend
    backend.close()


def test_real_adapter_reads_every_gpu(nvml: Any) -> None:
    tree = nvml.discover()
    assert tree.gpus
    for gpu in tree.gpus:
        assert gpu.uuid.startswith("GPU-")
        assert gpu.device.startswith("nvidia")
        reading = nvml.read_gpu(gpu)
        assert reading.memory is not None
        total = reading.memory.used_mib + reading.memory.free_mib + reading.memory.reserved_mib
        assert total == pytest.approx(reading.memory.total_mib, rel=1e-6)
        assert reading.gpu_temp_c is not None
        assert 0 < reading.gpu_temp_c < 110
        assert reading.power_w is not None
        assert reading.power_w > 0
        assert reading.sm_clock_mhz is not None
        assert reading.sm_clock_mhz > 0
        assert reading.power_min_w is not None
        assert reading.power_max_w is not None
        assert reading.power_min_w <= (reading.power_limit_w or 0) <= reading.power_max_w
        if not reading.mig_enabled:
            assert reading.gpu_util_pct is not None
            assert 0 <= reading.gpu_util_pct <= 100
        sample = DeviceSample(device=OwnedDevice(gpu=gpu), taken_at=0.0, gpu=reading)
        view = TelemetryView(samples=[sample], xids={}, errors={}, tuning={}, plans={}, now=0.0)
        text = render_text(render_families(view, ExportContext(hostname="gpu-host")))
        assert f'UUID="{gpu.uuid}"' in text
        assert "DCGM_FI_DEV_FB_USED{" in text


def test_real_tuning_limits_and_xid_wait_are_readable(nvml: Any) -> None:
    gpu = nvml.discover().gpus[0]
    limits = nvml.tuning_limits(gpu)
    assert limits.power_min_w <= limits.power_default_w <= limits.power_max_w
    assert limits.graphics_clocks_mhz
    assert limits.memory_clocks_mhz
    # No XID is expected on a healthy card; the wait must return, not hang or raise.
    assert nvml.wait_xid_events([gpu], timeout_s=0.2) == []


def test_dry_run_plans_against_the_card_and_changes_nothing(
    nvml: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gpu = nvml.discover().gpus[0]
    before = nvml.read_gpu(gpu).power_limit_w
    limits = nvml.tuning_limits(gpu)
    target = round((limits.power_min_w + limits.power_max_w) / 2)
    clocks = f"{limits.graphics_clocks_mhz[0]}:{limits.graphics_clocks_mhz[-1]}"
    code = main(
        [
            "--backend", "nvml", "--devices", gpu.uuid, "--dry-run", "--tuning-assume-exclusive",
            "--power-limit-watts", str(target), "--gpu-locked-clocks", clocks,
            "--tuning-journal", str(tmp_path / "journal.json"),
        ]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    plan = report["plans"][0]
    if nvml.read_gpu(gpu).mig_enabled:
        assert code == 3
        assert plan["refusal"] == "mig_device"
    else:
        assert code == 0, plan
        assert plan["set_power_limit_watts"] == target
    assert nvml.read_gpu(gpu).power_limit_w == before
    assert not (tmp_path / "journal.json").exists()
