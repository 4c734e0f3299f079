"""GPM profiling metrics (DCGM_FI_PROF_*): sampled between polls, freed, absent without GPM."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pynvml
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kuberank_sidecar import nvml_profiling
from kuberank_sidecar.collection import (
    PROFILING_FIELDS,
    ExportContext,
    TelemetryView,
    render_families,
)
from kuberank_sidecar.devices import NvmlErrorKind, ProfilingSample
from kuberank_sidecar.exposition import render_text
from kuberank_sidecar.fake_gpm import FULL_LOAD, FakeGpm
from kuberank_sidecar.fake_nvml import FakeNvml, fake_uuid
from kuberank_sidecar.polling import TelemetryPoller
from kuberank_sidecar.records import ErrorCounts, SampleBoard
from kuberank_sidecar.resolving import DeviceResolver, ResolverConfig

PROF = (
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_PROF_SM_OCCUPANCY",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_PROF_PCIE_TX_BYTES",
    "DCGM_FI_PROF_PCIE_RX_BYTES",
)
TENSOR_AT_FULL_LOAD = FULL_LOAD["tensor_active"][1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A poller on the fake backend, with a state file and a hand-driven clock."""

    def __init__(self, tmp_path: Path, profile: str, devices: str = "all") -> None:
        self.clock = Clock()
        self.state = tmp_path / "state.json"
        self.fake = FakeNvml(profile, state_file=self.state, clock=self.clock)
        self.fake.open()
        self.board, self.errors = SampleBoard(), ErrorCounts()
        resolver = DeviceResolver(
            ResolverConfig(
                devices_flag=devices,
                pod_resources_socket=tmp_path / "no.sock",
                handshake_file=tmp_path / "none.json",
                pod_name="",
                pod_namespace="",
            )
        )
        self.poller = TelemetryPoller(
            self.fake,
            resolver,
            board=self.board,
            errors=self.errors,
            interval_s=15.0,
            resolve_interval_s=3600.0,
            clock=self.clock,
        )

    def write(self, data: dict[str, Any]) -> None:
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.state)

    def poll(self, seconds: float = 15.0) -> None:
        self.clock.now += seconds
        self.poller.poll_once()

    def scrape(self) -> str:
        view = TelemetryView(
            samples=self.board.samples(),
            xids={},
            errors={},
            tuning={},
            plans={},
            now=self.clock.now,
        )
        ctx = ExportContext(hostname="node-a", pod="rr-0", namespace="search", stale_after_s=45)
        return render_text(render_families(view, ctx))


def _values(text: str, name: str, label: str = "gpu") -> dict[str, float]:
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return {s.labels[label]: s.value for s in family.samples}
    return {}


def test_first_poll_has_none_then_values_follow_the_load_knob(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "h100x8")
    rig.poll()
    assert not any(name in rig.scrape() for name in PROF)  # one sample is no measurement
    rig.write({"gpus": {"0": {"load": 0.8}, "1": {"tensor_active": 0.05}}})
    rig.poll()
    text = rig.scrape()
    tensor = _values(text, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE")
    assert tensor["0"] == pytest.approx(0.8 * TENSOR_AT_FULL_LOAD)
    assert tensor["1"] == pytest.approx(0.05)
    # Without a load knob a GPU's load is its utilization (h100x8 GPU 2: 31 %).
    assert _values(text, "DCGM_FI_PROF_GR_ENGINE_ACTIVE")["2"] == pytest.approx(0.31)
    assert len(tensor) == 8
    for name in PROF:
        assert f"# TYPE {name} gauge" in text
        assert all(v >= 0 for v in _values(text, name).values())
    assert all(v <= 1 for v in _values(text, "DCGM_FI_PROF_SM_ACTIVE").values())
    # PCIe in bytes per second, as dcgm-exporter: far above any ratio.
    assert _values(text, "DCGM_FI_PROF_PCIE_RX_BYTES")["0"] > 1e6
    # The same labels, in the same order, as the device's other dcgm-exporter fields.
    line = next(ln for ln in text.splitlines() if ln.startswith("DCGM_FI_PROF_SM_ACTIVE{"))
    util = next(ln for ln in text.splitlines() if ln.startswith("DCGM_FI_DEV_GPU_UTIL{"))
    assert line[line.index("{") : line.index("}")] == util[util.index("{") : util.index("}")]


def test_each_device_holds_one_sample_and_frees_the_rest(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "h100x8")
    for _ in range(5):
        rig.poll()
    assert len(rig.fake.gpm.outstanding) == 8
    assert rig.poller.profiling.held == 8
    # A failing read starts that device over and frees its sample.
    rig.write({"gpus": {"3": {"errors": {"read": "timeout"}}}})
    rig.poll()
    assert len(rig.fake.gpm.outstanding) == 7
    assert "3" not in _values(rig.scrape(), "DCGM_FI_PROF_SM_ACTIVE")
    rig.write({})
    rig.poll()
    assert "3" not in _values(rig.scrape(), "DCGM_FI_PROF_SM_ACTIVE")  # first sample again
    rig.poll()
    assert "3" in _values(rig.scrape(), "DCGM_FI_PROF_SM_ACTIVE")
    rig.poller.stop()
    assert rig.fake.gpm.outstanding == set()


def test_a_failing_gpm_call_is_counted_and_leaves_the_metrics_absent(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "h100x1", devices="0")
    rig.poll()
    rig.write({"gpus": {"0": {"errors": {"gpm": "timeout"}}}})
    rig.poll()
    text = rig.scrape()
    assert not any(name in text for name in PROF)
    assert "DCGM_FI_DEV_POWER_USAGE{" in text  # the rest of the reading is intact
    assert rig.errors.snapshot()[("gpm_sample", "timeout")] == 1
    assert rig.fake.gpm.outstanding == set()
    rig.write({})
    rig.poll()
    rig.poll()
    assert "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{" in rig.scrape()


def test_lost_gpu_releases_every_sample(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "h100x8")
    rig.poll()
    rig.poll()
    rig.write({"gpus": {"5": {"lost": True}}})
    rig.poll()
    # GPU 5 is lost: NVML re-initialises, so every sample goes; GPUs 6 and 7, read after it in
    # the same poll, start over with one sample each.
    assert len(rig.fake.gpm.outstanding) == 2
    assert "5" not in _values(rig.scrape(), "DCGM_FI_PROF_SM_ACTIVE")


def test_a_changed_claim_frees_the_samples_of_devices_no_longer_owned(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "h100x8")
    rig.poll()
    assert len(rig.fake.gpm.outstanding) == 8
    rig.poller.profiling.keep_only([fake_uuid("h100x8", 0)])
    assert len(rig.fake.gpm.outstanding) == 1


def test_ampere_mig_has_no_gpm_absent_not_zero_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    migs = ",".join(fake_uuid("a100-mig-1g.10gb", slot, prefix="MIG") for slot in range(7))
    rig = Rig(tmp_path, "a100-mig-1g.10gb", devices=migs)
    with caplog.at_level(logging.WARNING, logger="kuberank_sidecar.profiling"):
        for _ in range(3):
            rig.poll()
    text = rig.scrape()
    assert "DCGM_FI_DEV_FB_USED{" in text
    assert not any(name in text for name in PROF)
    warnings = [r for r in caplog.records if "GPM" in r.getMessage()]
    assert len(warnings) == 1
    assert "NVIDIA A100" in warnings[0].getMessage()
    assert rig.errors.snapshot() == {}
    assert rig.fake.gpm.outstanding == set()


def test_hopper_mig_slices_get_their_own_profiling_metrics(tmp_path: Path) -> None:
    migs = ",".join(fake_uuid("h100-mig-1g.10gb", slot, prefix="MIG") for slot in range(7))
    rig = Rig(tmp_path, "h100-mig-1g.10gb", devices=migs)
    rig.write({"mig": {"9": {"load": 1.0}, fake_uuid("h100-mig-1g.10gb", 5, prefix="MIG"): {}}})
    rig.poll()
    rig.poll()
    text = rig.scrape()
    tensor = _values(text, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", label="GPU_I_ID")
    assert sorted(int(k) for k in tensor) == list(range(7, 14))
    assert tensor["9"] == pytest.approx(TENSOR_AT_FULL_LOAD)
    assert tensor["7"] == pytest.approx(0.1 * TENSOR_AT_FULL_LOAD)  # slot 0's default load
    assert tensor["8"] < tensor["10"]
    help_line = next(ln for ln in text.splitlines() if ln.startswith("# HELP DCGM_FI_PROF_SM_ACT"))
    assert "GPU instance" in help_line
    assert "DCGM_FI_DEV_GPU_UTIL" not in text  # still none per instance from NVML utilization


def test_not_supported_sampling_stops_asking(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "h100x1", devices="0")
    rig.write({"gpus": {"0": {"errors": {"gpm": "not_supported"}}}})
    for _ in range(4):
        rig.poll()
    assert rig.errors.snapshot()[("gpm_sample", "not_supported")] == 1
    assert "DCGM_FI_PROF" not in rig.scrape()


def test_fake_gpm_averages_between_any_two_samples() -> None:
    gpm = FakeGpm()
    idle = dict.fromkeys(FULL_LOAD, 0.0)
    busy = dict.fromkeys(FULL_LOAD, 1.0)
    first = gpm.sample("gpu", idle, now=0.0)
    second = gpm.sample("gpu", busy, now=10.0)  # busy from 0 to 10 s
    third = gpm.sample("gpu", idle, now=40.0)  # idle from 10 to 40 s
    assert gpm.between(first, second).tensor_active == pytest.approx(1.0)
    assert gpm.between(second, third).tensor_active == pytest.approx(0.0)
    assert gpm.between(first, third).tensor_active == pytest.approx(0.25)
    for sample in (first, second, third):
        gpm.free(sample)
    assert gpm.outstanding == set()


# -- the real adapter's GPM calls, against a stand-in for libnvidia-ml ------------------------


class _FakeLibrary:
    """Records GPM allocations and frees; fails where told."""

    def __init__(self, *, fail_get: bool = False) -> None:
        self.fail_get = fail_get
        self.allocated: list[object] = []
        self.freed: list[object] = []

    def alloc(self) -> object:
        sample = object()
        self.allocated.append(sample)
        return sample

    def get(self, *_args: object) -> None:
        if self.fail_get:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def free(self, sample: object) -> None:
        self.freed.append(sample)

    def metrics_get(self, request: Any) -> Any:
        for slot in range(request.numMetrics):
            metric = request.metrics[slot]
            if metric.metricId == pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC:
                metric.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            else:
                metric.nvmlReturn = pynvml.NVML_SUCCESS
                metric.value = (
                    2.0 if metric.metricId == pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC else 50.0
                )
        return request


@pytest.fixture
def library(monkeypatch: pytest.MonkeyPatch) -> _FakeLibrary:
    lib = _FakeLibrary()
    monkeypatch.setattr(pynvml, "nvmlGpmSampleAlloc", lib.alloc)
    monkeypatch.setattr(pynvml, "nvmlGpmSampleGet", lib.get)
    monkeypatch.setattr(pynvml, "nvmlGpmMigSampleGet", lib.get)
    monkeypatch.setattr(pynvml, "nvmlGpmSampleFree", lib.free)
    monkeypatch.setattr(pynvml, "nvmlGpmMetricsGet", lib.metrics_get)
    return lib


def test_real_adapter_frees_a_sample_whose_get_failed(library: _FakeLibrary) -> None:
    library.fail_get = True
    with pytest.raises(pynvml.NVMLError):
        nvml_profiling.take_sample(object(), 7)
    assert library.freed == library.allocated != []


def test_real_adapter_converts_to_dcgm_units(library: _FakeLibrary) -> None:
    earlier = ProfilingSample(taken_at=1.0, handle=None)
    later = ProfilingSample(taken_at=16.0, handle=None)
    reading = nvml_profiling.between(earlier, later)
    assert reading.interval_s == 15.0
    assert reading.tensor_active == pytest.approx(0.5)  # 50 % -> 0.5
    assert reading.pcie_rx_bytes_per_s == 2.0 * 1024 * 1024  # 2 MiB/s -> bytes/s
    assert reading.pcie_tx_bytes_per_s is None
    assert [(e.field, e.kind) for e in reading.field_errors] == [
        ("gpm_pcie_tx_bytes_per_s", NvmlErrorKind.NOT_SUPPORTED)
    ]


def test_docs_name_every_profiling_metric_and_fake_knob() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "sidecar.md").read_text()
    assert tuple(name for name, _field, _help in PROFILING_FIELDS) == PROF
    for name in PROF:
        assert f"| `{name}` | gauge |" in doc, f"docs/sidecar.md does not list {name}"
    for knob in ("load", *FULL_LOAD):
        assert f"`{knob}`" in doc, f"docs/sidecar.md does not document the fake's {knob!r}"
    assert "`h100-mig-1g.10gb`" in doc
