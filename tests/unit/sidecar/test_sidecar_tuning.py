"""Tuning applied and restored through the fake card; denial, refusal and crash recovery."""

from __future__ import annotations

import json
from pathlib import Path

from kuberank_sidecar.devices import DeviceTree
from kuberank_sidecar.fake_nvml import FakeNvml
from kuberank_sidecar.ownership import DeviceClaim
from kuberank_sidecar.records import OwnedDevice
from kuberank_sidecar.tuning import TuningController, load_journal
from kuberank_sidecar.tuning_plans import ClockRange, TuningRequest, TuningState

REQUEST = TuningRequest(power_limit_w=450.0, gpu_clocks=ClockRange(1200, 1980))
EXCLUSIVE = DeviceClaim(device_ids=(), source="pod-resources", sharing_known=True)


def _card(
    profile: str = "h100x1", settings: Path | None = None
) -> tuple[FakeNvml, DeviceTree, list[OwnedDevice]]:
    fake = FakeNvml(profile, settings_file=settings)
    fake.open()
    tree = fake.discover()
    return fake, tree, [OwnedDevice(gpu=tree.gpus[0])]


def test_apply_then_restore_puts_the_card_back(tmp_path: Path) -> None:
    fake, tree, owned = _card()
    journal = tmp_path / "journal.json"
    ctl = TuningController(fake, REQUEST, journal_path=journal)
    ctl.on_devices(owned, EXCLUSIVE, tree)
    assert ctl.state is TuningState.APPLIED
    assert fake.settings_of(tree.gpus[0]) == {
        "power_limit_w": 450.0,
        "gpu_clocks": (1200, 1980),
        "memory_clocks": None,
    }
    assert load_journal(journal)[tree.gpus[0].uuid].previous_power_limit_w == 700.0
    ctl.restore()
    ctl.restore()  # idempotent
    assert fake.settings_of(tree.gpus[0]) == {
        "power_limit_w": 700.0,
        "gpu_clocks": None,
        "memory_clocks": None,
    }
    assert ctl.report()["state"] == "restored"
    assert not journal.exists()


def test_no_permission_means_denied_and_nothing_changed(tmp_path: Path, caplog: object) -> None:
    fake, tree, owned = _card("h100x1-no-permission")
    ctl = TuningController(fake, REQUEST, journal_path=tmp_path / "j.json")
    ctl.on_devices(owned, EXCLUSIVE, tree)
    assert ctl.state is TuningState.DENIED
    report = ctl.report()
    assert report["gpus"][0]["reason"] == "no_permission"
    assert "CAP_SYS_ADMIN" in report["gpus"][0]["message"]
    assert fake.settings_of(tree.gpus[0])["power_limit_w"] == 700.0
    assert not (tmp_path / "j.json").exists()


def test_mig_and_shared_gpus_are_refused_without_touching_the_card(tmp_path: Path) -> None:
    fake, tree, _ = _card("a100-mig-1g.10gb")
    mig = tree.mig_devices[0]
    ctl = TuningController(fake, REQUEST, journal_path=None)
    ctl.on_devices([OwnedDevice(gpu=mig.parent, mig=mig)], EXCLUSIVE, tree)
    assert ctl.state is TuningState.REFUSED
    assert ctl.report()["gpus"][0]["reason"] == "mig_device"
    fake2, tree2, owned2 = _card()
    shared = DeviceClaim(
        device_ids=(),
        source="pod-resources",
        sharing_known=True,
        shared_ids=frozenset({tree2.gpus[0].uuid}),
    )
    ctl2 = TuningController(fake2, REQUEST, journal_path=None)
    ctl2.on_devices(owned2, shared, tree2)
    assert ctl2.report()["gpus"][0]["reason"] == "shared_gpu"
    assert fake2.settings_of(tree2.gpus[0])["power_limit_w"] == 700.0
    assert fake.settings_of(mig.parent)["gpu_clocks"] is None


def test_a_card_with_another_pods_cuda_process_is_refused_as_shared(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"gpus": {"0": {"compute_processes": 2}}}))
    fake = FakeNvml("h100x1", state_file=state)
    fake.open()
    tree = fake.discover()
    ctl = TuningController(fake, REQUEST, journal_path=None, assume_exclusive=True)
    handshake = DeviceClaim(device_ids=(tree.gpus[0].uuid,), source="handshake")
    ctl.on_devices([OwnedDevice(gpu=tree.gpus[0])], handshake, tree)
    assert ctl.state is TuningState.REFUSED
    assert ctl.report()["gpus"][0]["reason"] == "shared_gpu"
    assert fake.settings_of(tree.gpus[0])["power_limit_w"] == 700.0


def test_an_uncountable_card_falls_back_to_the_claim(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps({"gpus": {"0": {"errors": {"compute_processes": "not_supported"}}}})
    )
    fake = FakeNvml("h100x1", state_file=state)
    fake.open()
    tree = fake.discover()
    ctl = TuningController(fake, REQUEST, journal_path=None)
    ctl.on_devices([OwnedDevice(gpu=tree.gpus[0])], EXCLUSIVE, tree)
    assert ctl.state is TuningState.APPLIED


def test_a_crashed_predecessor_is_detected_and_the_original_restored(tmp_path: Path) -> None:
    settings, journal = tmp_path / "card.json", tmp_path / "journal.json"
    fake, tree, owned = _card(settings=settings)
    first = TuningController(
        fake,
        TuningRequest(power_limit_w=300.0, gpu_clocks=ClockRange(900, 1200)),
        journal_path=journal,
        pid=11,
    )
    first.on_devices(owned, EXCLUSIVE, tree)
    # The first sidecar dies without restore; a new one starts on the same card and journal.
    fake2, tree2, owned2 = _card(settings=settings)
    assert fake2.settings_of(tree2.gpus[0])["power_limit_w"] == 300.0
    second = TuningController(
        fake2, TuningRequest(power_limit_w=450.0), journal_path=journal, pid=12
    )
    second.on_devices(owned2, EXCLUSIVE, tree2)
    plan = second.report()["gpus"][0]["plan"]
    assert plan["restore_power_limit_watts"] == 700.0
    assert "pid 11" in plan["inherited"][0]
    assert (
        json.loads(journal.read_text())["gpus"][tree2.gpus[0].uuid]["previous_power_limit_w"]
        == 700.0
    )
    second.restore()
    assert fake2.settings_of(tree2.gpus[0]) == {
        "power_limit_w": 700.0,
        "gpu_clocks": None,
        "memory_clocks": None,
    }


def test_leftovers_are_restored_at_start_when_tuning_is_now_off(tmp_path: Path) -> None:
    settings, journal = tmp_path / "card.json", tmp_path / "journal.json"
    fake, tree, owned = _card(settings=settings)
    TuningController(fake, REQUEST, journal_path=journal).on_devices(owned, EXCLUSIVE, tree)
    fake2, tree2, owned2 = _card(settings=settings)
    ctl = TuningController(fake2, TuningRequest(), journal_path=journal)
    ctl.on_devices(owned2, EXCLUSIVE, tree2)
    assert ctl.state is TuningState.RESTORED
    assert fake2.settings_of(tree2.gpus[0])["power_limit_w"] == 700.0
    assert not journal.exists()


def test_invalid_request_is_refused_and_named(tmp_path: Path) -> None:
    fake, tree, owned = _card()
    ctl = TuningController(fake, TuningRequest(power_limit_w=5000.0), journal_path=None)
    ctl.on_devices(owned, EXCLUSIVE, tree)
    gpu = ctl.report()["gpus"][0]
    assert (gpu["state"], gpu["reason"]) == ("refused", "invalid_request")
    assert "--power-limit-watts: 5000 W" in gpu["message"]
