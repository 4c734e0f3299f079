"""A scripted NVML backend for tests and demos without a GPU.

Profiles describe a host (`h100x8`, `a100-mig-1g.10gb`, failure profiles). A JSON state file,
re-read whenever it changes, overrides any GPU's values at run time, so a test can simulate
load, VRAM pressure, XIDs or a lost GPU against the real sidecar process:

    {"gpus": {"0": {"utilization": 95, "fb_used_mib": 70000, "power_w": 650,
                    "temperature": 84, "clock_event_reasons": ["hw_thermal_slowdown"],
                    "xid_events": [79], "lost": false,
                    "errors": {"memory_temp": "not_supported", "read": "timeout"},
                    "read_delay_s": 0.0}},
     "mig": {"MIG-…" or "7": {"fb_used_mib": 9000}},
     "read_delay_s": 0.0}

GPUs are keyed by index or UUID. `xid_events` is append-only: each new entry is delivered once.
Power limits and locked clocks set through the backend are kept in memory, or in a settings
file so that a second process (a restarted sidecar) sees what the first one left on the "card".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kuberank_sidecar.clock_events import CLOCK_EVENT_REASONS
from kuberank_sidecar.devices import (
    DeviceTree,
    FieldError,
    GpuIdentity,
    GpuReading,
    MemoryReading,
    MigIdentity,
    MigReading,
    NvmlError,
    NvmlErrorKind,
    TuningLimits,
    XidEvent,
)

log = logging.getLogger(__name__)

# Fields a state file may mark as failing; "read" fails the whole read, "set" every setter.
READING_FIELDS = (
    "utilization",
    "memory",
    "power_usage",
    "total_energy",
    "gpu_temp",
    "memory_temp",
    "sm_clock",
    "mem_clock",
    "pcie_replay",
    "power_limit",
    "clock_event_reasons",
)


@dataclass(frozen=True)
class FakeGpuSpec:
    """The baseline of one fake GPU; a state file overrides these values."""

    model_name: str
    pci_bus: int
    fb_total_mib: float
    fb_reserved_mib: float
    fb_used_mib: float
    utilization: float
    mem_copy_utilization: float
    power_w: float
    temperature: float
    memory_temperature: float
    sm_clock_mhz: float
    mem_clock_mhz: float
    power_default_w: float
    power_min_w: float
    power_max_w: float
    memory_clocks_mhz: tuple[int, ...]
    graphics_clocks_mhz: tuple[int, ...]
    mig_profile: str | None = None
    mig_count: int = 0
    mig_memory_mib: float = 0.0
    mig_first_instance_id: int = 0
    lost: bool = False
    slow_read_s: float = 0.0
    unsupported: tuple[str, ...] = ()
    setter_error: NvmlErrorKind | None = None


@dataclass(frozen=True)
class FakeProfile:
    name: str
    description: str
    gpus: tuple[FakeGpuSpec, ...]


def _h100(index: int, **changes: Any) -> FakeGpuSpec:
    spec = FakeGpuSpec(
        model_name="NVIDIA H100 80GB HBM3",
        pci_bus=(0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)[index % 8],
        fb_total_mib=81559.0,
        fb_reserved_mib=534.0,
        fb_used_mib=4000.0 + 7000.0 * index,
        utilization=float((index * 13 + 5) % 100),
        mem_copy_utilization=float((index * 7 + 3) % 100),
        power_w=120.0 + 55.0 * index,
        temperature=34.0 + 3.0 * index,
        memory_temperature=40.0 + 2.0 * index,
        sm_clock_mhz=1980.0,
        mem_clock_mhz=2619.0,
        power_default_w=700.0,
        power_min_w=200.0,
        power_max_w=700.0,
        memory_clocks_mhz=(2619,),
        graphics_clocks_mhz=tuple(range(345, 1981, 15)),
    )
    return dataclasses.replace(spec, **changes)


_A100_MIG = FakeGpuSpec(
    model_name="NVIDIA A100-SXM4-80GB",
    pci_bus=0x07,
    fb_total_mib=81920.0,
    fb_reserved_mib=0.0,
    fb_used_mib=0.0,
    utilization=0.0,
    mem_copy_utilization=0.0,
    power_w=180.0,
    temperature=41.0,
    memory_temperature=47.0,
    sm_clock_mhz=1410.0,
    mem_clock_mhz=1593.0,
    power_default_w=400.0,
    power_min_w=100.0,
    power_max_w=400.0,
    memory_clocks_mhz=(1593,),
    graphics_clocks_mhz=tuple(range(210, 1411, 15)),
    mig_profile="1g.10gb",
    mig_count=7,
    mig_memory_mib=9728.0,
    # An A100's seven 1g.10gb instances get GPU instance IDs 7 to 13.
    mig_first_instance_id=7,
)

PROFILES: dict[str, FakeProfile] = {
    p.name: p
    for p in (
        FakeProfile("h100x8", "8 × H100 80GB HBM3, an HGX host", tuple(_h100(i) for i in range(8))),
        FakeProfile("h100x1", "1 × H100 80GB HBM3", (_h100(0),)),
        FakeProfile("a100-mig-1g.10gb", "1 × A100 80GB with 7 MIG 1g.10gb slices", (_A100_MIG,)),
        FakeProfile(
            "h100x1-no-permission",
            "1 × H100 where setting power limits or clocks fails with NoPermission",
            (_h100(0, setter_error=NvmlErrorKind.NO_PERMISSION),),
        ),
        FakeProfile(
            "h100x1-not-supported",
            "1 × H100 where memory temperature, PCIe replays and energy are NotSupported",
            (_h100(0, unsupported=("memory_temp", "pcie_replay", "total_energy")),),
        ),
        FakeProfile("h100x1-lost", "1 × H100 that has fallen off the bus", (_h100(0, lost=True),)),
        FakeProfile(
            "h100x1-slow", "1 × H100 whose every read takes 3 s", (_h100(0, slow_read_s=3.0),)
        ),
    )
}


def fake_uuid(profile: str, index: int, *, prefix: str = "GPU") -> str:
    """A stable, UUID-shaped id for a fake device."""
    digest = hashlib.sha256(f"{profile}/{prefix}/{index}".encode()).hexdigest()
    return f"{prefix}-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


@dataclass
class _Settings:
    power_limit_w: float
    gpu_clocks: tuple[int, int] | None = None
    memory_clocks: tuple[int, int] | None = None


@dataclass
class _StateFile:
    path: Path | None
    stamp: tuple[int, int] | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


class FakeNvml:
    """NvmlBackend that plays a profile, overridden at run time by a state file."""

    def __init__(
        self,
        profile: str,
        *,
        state_file: Path | None = None,
        settings_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if profile not in PROFILES:
            choices = ", ".join(sorted(PROFILES))
            raise ValueError(f"--fake-profile {profile!r} is unknown: choose one of {choices}")
        self.profile = PROFILES[profile]
        self._state = _StateFile(state_file)
        self._settings_file = settings_file
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._opened_at = 0.0
        self._energy: dict[str, tuple[float, float]] = {}
        self._delivered_xids: dict[str, int] = {}
        self._is_open = False
        self._settings: dict[str, _Settings] = {}
        self._tree = self._build_tree()

    # -- profile and state -------------------------------------------------------------

    def _build_tree(self) -> DeviceTree:
        gpus: list[GpuIdentity] = []
        migs: list[MigIdentity] = []
        for index, spec in enumerate(self.profile.gpus):
            gpu = GpuIdentity(
                index=index,
                uuid=fake_uuid(self.profile.name, index),
                pci_bus_id=f"00000000:{spec.pci_bus:02X}:00.0",
                minor_number=index,
                model_name=spec.model_name,
            )
            gpus.append(gpu)
            for slot in range(spec.mig_count):
                migs.append(
                    MigIdentity(
                        parent=gpu,
                        uuid=fake_uuid(self.profile.name, index * 100 + slot, prefix="MIG"),
                        gpu_instance_id=spec.mig_first_instance_id + slot,
                        compute_instance_id=0,
                        profile=spec.mig_profile or "",
                    )
                )
        return DeviceTree(gpus=tuple(gpus), mig_devices=tuple(migs))

    def _spec(self, gpu: GpuIdentity) -> FakeGpuSpec:
        return self.profile.gpus[gpu.index]

    def _state_data(self) -> Mapping[str, Any]:
        # The poller and the XID thread both read the state file.
        with self._state_lock:
            return self._load_state()

    def _load_state(self) -> Mapping[str, Any]:
        state = self._state
        if state.path is None:
            return state.data
        try:
            st = state.path.stat()
        except FileNotFoundError:
            state.stamp, state.data = None, {}
            return state.data
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != state.stamp:
            try:
                loaded = json.loads(state.path.read_text())
                if not isinstance(loaded, dict):
                    raise ValueError("the top level must be a JSON object")
            except (OSError, ValueError) as exc:
                # A half-written file: keep the last good state (writers should rename into place).
                log.warning("fake state file %s ignored: %s", state.path, exc)
                return state.data
            state.stamp, state.data = stamp, loaded
        return state.data

    def _gpu_overrides(self, gpu: GpuIdentity) -> Mapping[str, Any]:
        gpus = self._state_data().get("gpus", {})
        if not isinstance(gpus, Mapping):
            return {}
        merged: dict[str, Any] = {}
        for key in (str(gpu.index), gpu.uuid):
            value = gpus.get(key)
            if isinstance(value, Mapping):
                merged.update(value)
        return merged

    def _mig_overrides(self, mig: MigIdentity) -> Mapping[str, Any]:
        migs = self._state_data().get("mig", {})
        if not isinstance(migs, Mapping):
            return {}
        merged: dict[str, Any] = {}
        for key in (str(mig.gpu_instance_id), mig.uuid):
            value = migs.get(key)
            if isinstance(value, Mapping):
                merged.update(value)
        return merged

    def _load_settings(self) -> dict[str, _Settings]:
        settings = {
            gpu.uuid: _Settings(power_limit_w=self._spec(gpu).power_default_w)
            for gpu in self._tree.gpus
        }
        if self._settings_file is not None and self._settings_file.exists():
            saved = json.loads(self._settings_file.read_text())
            for uuid, entry in saved.items():
                if uuid in settings:
                    settings[uuid] = _Settings(
                        power_limit_w=float(entry["power_limit_w"]),
                        gpu_clocks=tuple(entry["gpu_clocks"]) if entry.get("gpu_clocks") else None,
                        memory_clocks=(
                            tuple(entry["memory_clocks"]) if entry.get("memory_clocks") else None
                        ),
                    )
        return settings

    def _save_settings(self) -> None:
        if self._settings_file is None:
            return
        payload = {uuid: dataclasses.asdict(s) for uuid, s in self._settings.items()}
        tmp = self._settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(self._settings_file)

    def _fail_if_lost(self, gpu: GpuIdentity, operation: str) -> Mapping[str, Any]:
        if not self._is_open:
            raise NvmlError(NvmlErrorKind.UNINITIALIZED, operation=operation)
        overrides = self._gpu_overrides(gpu)
        if bool(overrides.get("lost", self._spec(gpu).lost)):
            raise NvmlError(NvmlErrorKind.GPU_LOST, operation=operation)
        return overrides

    def _delay(self, overrides: Mapping[str, Any], spec: FakeGpuSpec) -> None:
        delay = float(overrides.get("read_delay_s", self._state_data().get("read_delay_s", 0.0)))
        delay = max(delay, spec.slow_read_s)
        if delay > 0:
            self._sleep(delay)

    # -- NvmlBackend ---------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            self._is_open = True
            self._opened_at = self._clock()
            self._settings = self._load_settings()

    def close(self) -> None:
        self._is_open = False

    def discover(self) -> DeviceTree:
        if not self._is_open:
            raise NvmlError(NvmlErrorKind.UNINITIALIZED, operation="discover")
        return self._tree

    def read_gpu(self, gpu: GpuIdentity) -> GpuReading:
        spec = self._spec(gpu)
        overrides = self._fail_if_lost(gpu, "read_gpu")
        self._delay(overrides, spec)
        errors = dict.fromkeys(spec.unsupported, NvmlErrorKind.NOT_SUPPORTED)
        for name, kind in dict(overrides.get("errors", {})).items():
            errors[name] = NvmlErrorKind(kind)
        if "read" in errors:
            raise NvmlError(errors["read"], operation="read_gpu")
        with self._lock:
            settings = self._settings[gpu.uuid]
        mig_enabled = spec.mig_count > 0

        def pick(name: str, key: str, base: float) -> float | None:
            return None if name in errors else float(overrides.get(key, base))

        power = pick("power_usage", "power_w", spec.power_w)
        reasons = {str(r) for r in overrides.get("clock_event_reasons", [])}
        if power is not None and power > settings.power_limit_w:
            power = settings.power_limit_w  # The card caps its draw at the limit.
            reasons.add("sw_power_cap")
        sm_clock = pick("sm_clock", "sm_clock_mhz", spec.sm_clock_mhz)
        if sm_clock is not None and settings.gpu_clocks is not None:
            sm_clock = float(min(max(sm_clock, settings.gpu_clocks[0]), settings.gpu_clocks[1]))
        mem_clock = pick("mem_clock", "mem_clock_mhz", spec.mem_clock_mhz)
        if mem_clock is not None and settings.memory_clocks is not None:
            mem_clock = float(settings.memory_clocks[1])
        used = float(overrides.get("fb_used_mib", spec.fb_used_mib))
        memory = None
        if "memory" not in errors:
            used_total = used if not mig_enabled else self._mig_used_total(gpu)
            memory = MemoryReading(
                total_mib=spec.fb_total_mib,
                used_mib=used_total,
                free_mib=spec.fb_total_mib - spec.fb_reserved_mib - used_total,
                reserved_mib=spec.fb_reserved_mib,
            )
        util_ok = not mig_enabled and "utilization" not in errors
        return GpuReading(
            identity=gpu,
            mig_enabled=mig_enabled,
            gpu_util_pct=float(overrides.get("utilization", spec.utilization)) if util_ok else None,
            mem_copy_util_pct=(
                float(overrides.get("mem_copy_utilization", spec.mem_copy_utilization))
                if util_ok
                else None
            ),
            memory=memory,
            power_w=power,
            energy_mj=None if "total_energy" in errors else self._energy_mj(gpu, power or 0.0),
            gpu_temp_c=pick("gpu_temp", "temperature", spec.temperature),
            memory_temp_c=pick("memory_temp", "memory_temperature", spec.memory_temperature),
            sm_clock_mhz=sm_clock,
            mem_clock_mhz=mem_clock,
            pcie_replay_count=pick("pcie_replay", "pcie_replay", 0.0),
            power_limit_w=None if "power_limit" in errors else settings.power_limit_w,
            power_default_w=None if "power_limit" in errors else spec.power_default_w,
            power_min_w=None if "power_limit" in errors else spec.power_min_w,
            power_max_w=None if "power_limit" in errors else spec.power_max_w,
            clock_event_reasons=(
                None if "clock_event_reasons" in errors else _reason_mask(sorted(reasons))
            ),
            field_errors=tuple(
                FieldError(field=name, kind=kind)
                for name, kind in sorted(errors.items())
                if name in READING_FIELDS
            ),
        )

    def _mig_used_total(self, gpu: GpuIdentity) -> float:
        return sum(
            self._mig_used(mig) for mig in self._tree.mig_devices if mig.parent.uuid == gpu.uuid
        )

    def _mig_used(self, mig: MigIdentity) -> float:
        slot = mig.gpu_instance_id - self._spec(mig.parent).mig_first_instance_id
        return float(self._mig_overrides(mig).get("fb_used_mib", 500.0 + 1000.0 * slot))

    def _energy_mj(self, gpu: GpuIdentity, power_w: float) -> float:
        # Energy integrates the reported power over time, like the card's own counter.
        now = self._clock()
        with self._lock:
            last_t, total = self._energy.get(gpu.uuid, (self._opened_at, 1.0e9 * (gpu.index + 1)))
            total += power_w * max(0.0, now - last_t) * 1000.0
            self._energy[gpu.uuid] = (now, total)
        return total

    def read_mig(self, mig: MigIdentity) -> MigReading:
        spec = self._spec(mig.parent)
        overrides = self._fail_if_lost(mig.parent, "read_mig")
        self._delay(overrides, spec)
        used = self._mig_used(mig)
        return MigReading(
            identity=mig,
            memory=MemoryReading(
                total_mib=spec.mig_memory_mib,
                used_mib=used,
                free_mib=spec.mig_memory_mib - used,
                reserved_mib=0.0,
            ),
        )

    def tuning_limits(self, gpu: GpuIdentity) -> TuningLimits:
        spec = self._spec(gpu)
        self._fail_if_lost(gpu, "tuning_limits")
        with self._lock:
            current = self._settings[gpu.uuid].power_limit_w
        return TuningLimits(
            power_min_w=spec.power_min_w,
            power_max_w=spec.power_max_w,
            power_default_w=spec.power_default_w,
            power_current_w=current,
            memory_clocks_mhz=spec.memory_clocks_mhz,
            graphics_clocks_mhz=spec.graphics_clocks_mhz,
        )

    def _check_setter(self, gpu: GpuIdentity, operation: str) -> FakeGpuSpec:
        spec = self._spec(gpu)
        overrides = self._fail_if_lost(gpu, operation)
        errors = dict(overrides.get("errors", {}))
        if "set" in errors:
            raise NvmlError(NvmlErrorKind(errors["set"]), operation=operation)
        if spec.setter_error is not None:
            raise NvmlError(spec.setter_error, operation=operation)
        return spec

    def set_power_limit(self, gpu: GpuIdentity, *, watts: float) -> None:
        spec = self._check_setter(gpu, "set_power_limit")
        if not spec.power_min_w <= watts <= spec.power_max_w:
            raise NvmlError(NvmlErrorKind.INVALID_ARGUMENT, operation="set_power_limit")
        with self._lock:
            self._settings[gpu.uuid].power_limit_w = watts
            self._save_settings()

    def lock_gpu_clocks(self, gpu: GpuIdentity, *, min_mhz: int, max_mhz: int) -> None:
        spec = self._check_setter(gpu, "lock_gpu_clocks")
        _check_clock_range(spec.graphics_clocks_mhz, min_mhz, max_mhz, "lock_gpu_clocks")
        with self._lock:
            self._settings[gpu.uuid].gpu_clocks = (min_mhz, max_mhz)
            self._save_settings()

    def reset_gpu_clocks(self, gpu: GpuIdentity) -> None:
        self._check_setter(gpu, "reset_gpu_clocks")
        with self._lock:
            self._settings[gpu.uuid].gpu_clocks = None
            self._save_settings()

    def lock_memory_clocks(self, gpu: GpuIdentity, *, min_mhz: int, max_mhz: int) -> None:
        spec = self._check_setter(gpu, "lock_memory_clocks")
        _check_clock_range(spec.memory_clocks_mhz, min_mhz, max_mhz, "lock_memory_clocks")
        with self._lock:
            self._settings[gpu.uuid].memory_clocks = (min_mhz, max_mhz)
            self._save_settings()

    def reset_memory_clocks(self, gpu: GpuIdentity) -> None:
        self._check_setter(gpu, "reset_memory_clocks")
        with self._lock:
            self._settings[gpu.uuid].memory_clocks = None
            self._save_settings()

    def wait_xid_events(self, gpus: Sequence[GpuIdentity], *, timeout_s: float) -> list[XidEvent]:
        deadline = self._clock() + timeout_s
        while True:
            events = self._pending_xids(gpus)
            if events or self._clock() >= deadline:
                return events
            self._sleep(min(0.1, max(0.0, deadline - self._clock())))

    def _pending_xids(self, gpus: Sequence[GpuIdentity]) -> list[XidEvent]:
        events: list[XidEvent] = []
        for gpu in gpus:
            listed = list(self._gpu_overrides(gpu).get("xid_events", []))
            with self._lock:
                seen = self._delivered_xids.get(gpu.uuid, 0)
                self._delivered_xids[gpu.uuid] = len(listed)
            for entry in listed[seen:]:
                if isinstance(entry, Mapping):
                    instance = entry.get("gpu_instance_id")
                    events.append(
                        XidEvent(
                            gpu_uuid=gpu.uuid,
                            xid=int(entry["xid"]),
                            gpu_instance_id=None if instance is None else int(instance),
                        )
                    )
                else:
                    events.append(XidEvent(gpu_uuid=gpu.uuid, xid=int(entry)))
        return events

    # -- for tests -----------------------------------------------------------------------

    def settings_of(self, gpu: GpuIdentity) -> dict[str, Any]:
        """What the fake card has been set to (power limit, locked clocks)."""
        with self._lock:
            return dataclasses.asdict(self._settings[gpu.uuid])


def _reason_mask(names: Sequence[str]) -> int:
    mask = 0
    for name in names:
        if name not in CLOCK_EVENT_REASONS:
            raise ValueError(
                f"clock_event_reasons: {name!r} is unknown; "
                f"use one of {sorted(CLOCK_EVENT_REASONS)}"
            )
        mask |= CLOCK_EVENT_REASONS[name]
    return mask


def _check_clock_range(supported: Sequence[int], low: int, high: int, operation: str) -> None:
    if not supported or low > high or low < min(supported) or high > max(supported):
        raise NvmlError(NvmlErrorKind.INVALID_ARGUMENT, operation=operation)
