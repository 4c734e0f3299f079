"""Metric families rendered from fake-NVML samples: names, units, labels, MIG and staleness."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from kuberank_sidecar.collection import ExportContext, TelemetryView, render_families
from kuberank_sidecar.devices import NvmlErrorKind
from kuberank_sidecar.exposition import render_text
from kuberank_sidecar.fake_nvml import PROFILES, FakeNvml
from kuberank_sidecar.records import DeviceSample, OwnedDevice, XidTally
from kuberank_sidecar.tuning_plans import GpuTuningStatus, TuningState

CTX = ExportContext(hostname="node-a", pod="rr-0", namespace="search", container="inference")
DCGM_LABEL_ORDER = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"]


def _samples(profile: str, *, now: float = 100.0) -> tuple[FakeNvml, list[DeviceSample]]:
    fake = FakeNvml(profile)
    fake.open()
    tree = fake.discover()
    samples = []
    if tree.mig_devices:
        for mig in tree.mig_devices:
            device = OwnedDevice(gpu=mig.parent, mig=mig)
            samples.append(
                DeviceSample(
                    device=device,
                    taken_at=now,
                    gpu=fake.read_gpu(mig.parent),
                    mig=fake.read_mig(mig),
                )
            )
    else:
        for gpu in tree.gpus:
            samples.append(
                DeviceSample(device=OwnedDevice(gpu=gpu), taken_at=now, gpu=fake.read_gpu(gpu))
            )
    return fake, samples


def _view(samples: list[DeviceSample], **kw: object) -> TelemetryView:
    base: dict[str, object] = {
        "samples": samples,
        "xids": {},
        "errors": {},
        "tuning": {},
        "plans": {},
        "now": 101.0,
    }
    base.update(kw)
    return TelemetryView(**base)  # type: ignore[arg-type]


def _parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_h100_host_exports_dcgm_fields_with_profile_values() -> None:
    _fake, samples = _samples("h100x8")
    parsed = _parse(render_text(render_families(_view(samples), CTX)))
    specs = PROFILES["h100x8"].gpus
    util = {labels["gpu"]: v for labels, v in parsed["DCGM_FI_DEV_GPU_UTIL"]}
    assert util == {str(i): spec.utilization for i, spec in enumerate(specs)}
    used = {labels["gpu"]: v for labels, v in parsed["DCGM_FI_DEV_FB_USED"]}
    free = {labels["gpu"]: v for labels, v in parsed["DCGM_FI_DEV_FB_FREE"]}
    for i, spec in enumerate(specs):
        assert used[str(i)] == spec.fb_used_mib
        assert used[str(i)] + free[str(i)] + spec.fb_reserved_mib == spec.fb_total_mib
    power = {labels["gpu"]: v for labels, v in parsed["DCGM_FI_DEV_POWER_USAGE"]}
    assert power["3"] == specs[3].power_w
    labels, _ = parsed["DCGM_FI_DEV_GPU_TEMP"][0]
    assert labels["device"] == "nvidia0"
    assert labels["modelName"] == "NVIDIA H100 80GB HBM3"
    assert labels["pci_bus_id"].startswith("00000000:")
    assert (labels["Hostname"], labels["pod"], labels["namespace"], labels["container"]) == (
        "node-a",
        "rr-0",
        "search",
        "inference",
    )
    assert "GPU_I_ID" not in labels


def test_label_order_and_counter_names_follow_dcgm_exporter() -> None:
    _fake, samples = _samples("h100x1")
    text = render_text(render_families(_view(samples), CTX))
    line = next(ln for ln in text.splitlines() if ln.startswith("DCGM_FI_DEV_FB_USED{"))
    keys = [part.split("=")[0] for part in line[line.index("{") + 1 : line.index("}")].split(",")]
    assert keys[: len(DCGM_LABEL_ORDER)] == DCGM_LABEL_ORDER
    # dcgm-exporter's counters carry no _total suffix, in TYPE lines or samples.
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter" in text
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total" not in text
    assert "# TYPE DCGM_FI_DEV_PCIE_REPLAY_COUNTER counter" in text


def test_mig_slices_export_memory_per_instance_and_no_utilization() -> None:
    _fake, samples = _samples("a100-mig-1g.10gb")
    families = {f.name: f for f in render_families(_view(samples), CTX)}
    assert "DCGM_FI_DEV_GPU_UTIL" not in families
    assert "DCGM_FI_DEV_MEM_COPY_UTIL" not in families
    used = families["DCGM_FI_DEV_FB_USED"].samples
    assert sorted(int(s.labels["GPU_I_ID"]) for s in used) == list(range(7, 14))
    assert {s.labels["GPU_I_PROFILE"] for s in used} == {"1g.10gb"}
    spec = PROFILES["a100-mig-1g.10gb"].gpus[0]
    for s in used:
        free = next(f for f in families["DCGM_FI_DEV_FB_FREE"].samples if f.labels == s.labels)
        assert s.value + free.value == spec.mig_memory_mib
    assert "Whole-GPU" in families["DCGM_FI_DEV_POWER_USAGE"].documentation
    assert "Whole-GPU" in families["DCGM_FI_DEV_GPU_TEMP"].documentation
    assert "GPU instance" in families["DCGM_FI_DEV_FB_USED"].documentation


def test_stale_or_failed_samples_drop_values_and_report_unavailable() -> None:
    _fake, samples = _samples("h100x8")
    old = [
        DeviceSample(device=s.device, taken_at=0.0, gpu=s.gpu) if s.device.gpu.index == 1 else s
        for s in samples
    ]
    lost = [
        DeviceSample(device=s.device, taken_at=100.0, error=NvmlErrorKind.GPU_LOST)
        if s.device.gpu.index == 2
        else s
        for s in old
    ]
    families = {f.name: f for f in render_families(_view(lost, now=101.0), CTX)}
    available = {s.labels["gpu"]: s.value for s in families["kuberank_gpu_available"].samples}
    assert available["1"] == 0.0
    assert available["2"] == 0.0
    assert available["0"] == 1.0
    util_gpus = {s.labels["gpu"] for s in families["DCGM_FI_DEV_GPU_UTIL"].samples}
    assert util_gpus == {str(i) for i in range(8)} - {"1", "2"}


def test_xids_tuning_errors_and_clock_events_are_rendered() -> None:
    fake, samples = _samples("h100x1")
    uuid = samples[0].device.uuid
    view = _view(
        samples,
        xids={uuid: XidTally(last_xid=79, counts={79: 2, 48: 1})},
        errors={("memory_temp", "not_supported"): 3},
        tuning={uuid: GpuTuningStatus(TuningState.REFUSED, "shared_gpu", "shared")},
    )
    parsed = _parse(render_text(render_families(view, CTX)))
    assert parsed["DCGM_FI_DEV_XID_ERRORS"][0][1] == 79
    counts = {labels["xid"]: v for labels, v in parsed["kuberank_gpu_xid_events_total"]}
    assert counts == {"48": 1, "79": 2}
    errors = parsed["kuberank_gpu_nvml_errors_total"]
    assert errors[0][0]["operation"] == "memory_temp"
    assert errors[0][1] == 3
    state = parsed["kuberank_gpu_tuning_state"][0][0]
    assert (state["state"], state["reason"]) == ("refused", "shared_gpu")
    active = {labels["reason"]: v for labels, v in parsed["kuberank_gpu_clock_event_active"]}
    assert active["hw_thermal_slowdown"] == 0
    assert fake.settings_of(samples[0].device.gpu)["power_limit_w"] == 700.0


def test_vram_headroom_goes_negative_inside_the_safety_margin() -> None:
    fake, samples = _samples("h100x1")
    ctx = ExportContext(hostname="n", vram_safety_margin=0.2)
    parsed = _parse(render_text(render_families(_view(samples), ctx)))
    spec = PROFILES["h100x1"].gpus[0]
    expected = spec.fb_total_mib * 0.8 - spec.fb_used_mib - spec.fb_reserved_mib
    assert parsed["kuberank_gpu_vram_headroom_mib"][0][1] == expected
    full = samples[0]
    assert full.gpu is not None
    assert full.gpu.memory is not None
    memory = full.gpu.memory
    crowded = type(memory)(
        total_mib=memory.total_mib,
        used_mib=memory.total_mib * 0.9,
        free_mib=memory.total_mib * 0.1 - memory.reserved_mib,
        reserved_mib=memory.reserved_mib,
    )
    gpu = type(full.gpu)(identity=full.gpu.identity, mig_enabled=False, memory=crowded)
    sample = DeviceSample(device=full.device, taken_at=100.0, gpu=gpu)
    parsed = _parse(render_text(render_families(_view([sample]), ctx)))
    assert parsed["kuberank_gpu_vram_headroom_mib"][0][1] < 0
    del fake


def test_label_values_are_escaped() -> None:
    _fake, samples = _samples("h100x1")
    ctx = ExportContext(hostname='we"ird\\host\nname')
    parsed = _parse(render_text(render_families(_view(samples), ctx)))
    assert parsed["DCGM_FI_DEV_GPU_TEMP"][0][0]["Hostname"] == 'we"ird\\host\nname'
