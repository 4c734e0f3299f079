"""The background poller and XID watcher on the fake backend: failures, recovery, staleness."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from kuberank_sidecar.collection import ExportContext, TelemetryView, render_families
from kuberank_sidecar.devices import NvmlErrorKind
from kuberank_sidecar.fake_nvml import FakeNvml, fake_uuid
from kuberank_sidecar.polling import TelemetryPoller, XidWatcher
from kuberank_sidecar.records import ErrorCounts, SampleBoard, XidLedger
from kuberank_sidecar.resolving import DeviceResolver, ResolverConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rig(tmp_path: Path, profile: str = "h100x8", devices: str = "all", **fake_kw: object):  # type: ignore[no-untyped-def]
    state = tmp_path / "state.json"
    clock = Clock()
    fake = FakeNvml(profile, state_file=state, clock=clock, **fake_kw)  # type: ignore[arg-type]
    fake.open()
    board, errors = SampleBoard(), ErrorCounts()
    resolver = DeviceResolver(
        ResolverConfig(
            devices_flag=devices,
            pod_resources_socket=tmp_path / "no.sock",
            handshake_file=tmp_path / "none.json",
            pod_name="",
            pod_namespace="",
        )
    )
    poller = TelemetryPoller(
        fake,
        resolver,
        board=board,
        errors=errors,
        interval_s=1.0,
        resolve_interval_s=30.0,
        clock=clock,
    )
    return fake, poller, board, errors, state, clock


def _write(state: Path, data: dict[str, object]) -> None:
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(state)


def _available(board: SampleBoard, clock: Clock) -> dict[int, float]:
    view = TelemetryView(
        samples=board.samples(), xids={}, errors={}, tuning={}, plans={}, now=clock.now
    )
    fam = {f.name: f for f in render_families(view, ExportContext(hostname="h", stale_after_s=3.0))}
    return {int(s.labels["gpu"]): s.value for s in fam["kuberank_gpu_available"].samples}


def test_state_file_overrides_are_read_every_poll(tmp_path: Path) -> None:
    fake, poller, board, _errors, state, _clock = _rig(tmp_path)
    poller.poll_once()
    _write(
        state,
        {
            "gpus": {
                "2": {"utilization": 97, "fb_used_mib": 70000},
                fake_uuid("h100x8", 5): {"power_w": 650},
            }
        },
    )
    poller.poll_once()
    by_index = {s.device.gpu.index: s for s in board.samples()}
    assert by_index[2].gpu is not None
    assert by_index[2].gpu.gpu_util_pct == 97
    assert by_index[2].gpu.memory is not None
    assert by_index[2].gpu.memory.used_mib == 70000
    assert by_index[5].gpu is not None
    assert by_index[5].gpu.power_w == 650
    del fake


def test_lost_gpu_is_counted_dropped_and_recovers(tmp_path: Path) -> None:
    _fake, poller, board, errors, state, clock = _rig(tmp_path)
    poller.poll_once()
    _write(state, {"gpus": {"3": {"lost": True}}})
    clock.now += 1
    poller.poll_once()
    assert _available(board, clock)[3] == 0.0
    assert _available(board, clock)[4] == 1.0
    assert errors.snapshot()[("read_gpu", "gpu_lost")] == 1
    _write(state, {"gpus": {"3": {"lost": False}}})
    clock.now += 1
    poller.poll_once()  # rediscovers after the fatal error
    poller.poll_once()
    assert _available(board, clock)[3] == 1.0


def test_not_supported_fields_are_left_out_and_counted(tmp_path: Path) -> None:
    _fake, poller, board, errors, _state, _clock = _rig(tmp_path, profile="h100x1-not-supported")
    poller.poll_once()
    poller.poll_once()
    sample = board.samples()[0]
    assert sample.gpu is not None
    assert sample.gpu.memory_temp_c is None
    assert sample.gpu.energy_mj is None
    assert sample.gpu.gpu_temp_c is not None
    assert errors.snapshot()[("memory_temp", "not_supported")] == 2


def test_timeouts_and_no_permission_are_errors_not_crashes(tmp_path: Path) -> None:
    _fake, poller, board, errors, state, clock = _rig(tmp_path, profile="h100x1")
    _write(state, {"gpus": {"0": {"errors": {"read": "timeout", "power_limit": "no_permission"}}}})
    poller.poll_once()
    assert board.samples()[0].error is NvmlErrorKind.TIMEOUT
    assert _available(board, clock)[0] == 0.0
    _write(state, {"gpus": {"0": {"errors": {"power_limit": "no_permission"}}}})
    poller.poll_once()
    sample = board.samples()[0]
    assert sample.error is None
    assert sample.gpu is not None
    assert sample.gpu.power_limit_w is None
    assert errors.snapshot()[("read_gpu", "timeout")] == 1
    assert errors.snapshot()[("power_limit", "no_permission")] == 1


def test_a_hung_driver_never_blocks_a_scrape_and_its_values_go_stale(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()

    def blocking_sleep(_seconds: float) -> None:
        entered.set()
        release.wait(30)

    fake, poller, board, _errors, state, clock = _rig(
        tmp_path, profile="h100x1", sleep=blocking_sleep
    )
    poller.poll_once()
    _write(state, {"read_delay_s": 60})
    worker = threading.Thread(target=poller.poll_once)
    worker.start()
    assert entered.wait(10)
    # The poll is stuck inside the "driver"; a scrape still renders from the last sample.
    assert _available(board, clock)[0] == 1.0
    clock.now += 10  # past stale_after (3 s): the frozen value is dropped, not repeated
    assert _available(board, clock)[0] == 0.0
    release.set()
    worker.join(10)
    assert not worker.is_alive()
    del fake


def test_xid_events_reach_only_the_owning_mig_device(tmp_path: Path) -> None:
    fake0 = FakeNvml("a100-mig-1g.10gb")
    fake0.open()
    mig = fake0.discover().mig_devices[2]
    fake, poller, _board, errors, state, _clock = _rig(
        tmp_path, profile="a100-mig-1g.10gb", devices=mig.uuid
    )
    poller.poll_once()
    ledger = XidLedger()
    watcher = XidWatcher(fake, poller, ledger=ledger, errors=errors, wait_s=0.0)
    other = mig.gpu_instance_id + 1
    _write(
        state,
        {
            "gpus": {
                "0": {
                    "xid_events": [
                        {"xid": 31, "gpu_instance_id": other},
                        {"xid": 43, "gpu_instance_id": mig.gpu_instance_id},
                        79,
                    ]
                }
            }
        },
    )
    watcher.watch_once()
    tally = ledger.snapshot()[mig.uuid]
    assert tally.counts == {43: 1, 79: 1}
    assert tally.last_xid == 79
    watcher.watch_once()  # already delivered entries are not delivered again
    assert ledger.snapshot()[mig.uuid].counts == {43: 1, 79: 1}
