"""A scripted NVML backend for tests and demos without a GPU.

Profiles describe a host (`h100x8`, `a100-mig-1g.10gb`, failure profiles). A JSON state file,
re-read whenever it changes, overrides any GPU's values at run time (load, VRAM pressure, XIDs,
a lost GPU, failing calls), so a test can script the real sidecar process; its format is in
docs/sidecar.md ("Fake backend"). Power limits and locked clocks set through the backend are
kept in memory, or in a settings file so that a second process (a restarted sidecar) sees what
the first one left on the "card"; GPM samples come from fake_gpm.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kuberank_sidecar import fake_gpm
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
    ProfilingReading,
    ProfilingSample,
    TuningLimits,
    XidEvent,
)
from kuberank_sidecar.fake_profiles import PROFILES, FakeGpuSpec, FakeProfile, fake_uuid
from kuberank_sidecar.fake_state import CardSettings, StateFile, load_settings, save_settings

__all__ = ["PROFILES", "READING_FIELDS", "FakeGpuSpec", "FakeNvml", "FakeProfile", "fake_uuid"]

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
        self._state = StateFile(state_file)
        self._settings_file = settings_file
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._opened_at = 0.0
        self._energy: dict[str, tuple[float, float]] = {}
        self._delivered_xids: dict[str, int] = {}
        self._is_open = False
        self._settings: dict[str, CardSettings] = {}
        self._tree = self._build_tree()
        self.gpm = fake_gpm.FakeGpm()

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

    def _gpu_overrides(self, gpu: GpuIdentity) -> Mapping[str, Any]:
        return self._state.overrides("gpus", (str(gpu.index), gpu.uuid))

    def _mig_overrides(self, mig: MigIdentity) -> Mapping[str, Any]:
        return self._state.overrides("mig", (str(mig.gpu_instance_id), mig.uuid))

    def _load_settings(self) -> dict[str, CardSettings]:
        defaults = {gpu.uuid: self._spec(gpu).power_default_w for gpu in self._tree.gpus}
        return load_settings(self._settings_file, defaults)

    def _save_settings(self) -> None:
        save_settings(self._settings_file, self._settings)

    def _fail_if_lost(self, gpu: GpuIdentity, operation: str) -> Mapping[str, Any]:
        if not self._is_open:
            raise NvmlError(NvmlErrorKind.UNINITIALIZED, operation=operation)
        overrides = self._gpu_overrides(gpu)
        if bool(overrides.get("lost", self._spec(gpu).lost)):
            raise NvmlError(NvmlErrorKind.GPU_LOST, operation=operation)
        return overrides

    def _delay(self, overrides: Mapping[str, Any], spec: FakeGpuSpec) -> None:
        delay = float(overrides.get("read_delay_s", self._state.data().get("read_delay_s", 0.0)))
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

    def compute_processes(self, gpu: GpuIdentity) -> int:
        overrides = self._fail_if_lost(gpu, "compute_processes")
        errors = dict(overrides.get("errors", {}))
        if "compute_processes" in errors:
            raise NvmlError(
                NvmlErrorKind(errors["compute_processes"]), operation="compute_processes"
            )
        return int(overrides.get("compute_processes", 0))

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

    def profiling_supported(self, gpu: GpuIdentity) -> bool:
        self._fail_if_lost(gpu, "gpm_support")
        return self._spec(gpu).gpm

    def take_profiling_sample(
        self, gpu: GpuIdentity, *, gpu_instance_id: int | None = None
    ) -> ProfilingSample:
        spec, entry = self._spec(gpu), self._fail_if_lost(gpu, "gpm_sample")
        failure = dict(entry.get("errors", {})).get("gpm", None if spec.gpm else "not_supported")
        if failure is not None:
            raise NvmlError(NvmlErrorKind(failure), operation="gpm_sample")
        slot = None
        if gpu_instance_id is not None:
            migs = [m for m in self._tree.mig_devices if m.parent == gpu]
            mig = next((m for m in migs if m.gpu_instance_id == gpu_instance_id), None)
            if mig is None:
                raise NvmlError(NvmlErrorKind.NOT_FOUND, operation="gpm_sample")
            slot, entry = gpu_instance_id - spec.mig_first_instance_id, self._mig_overrides(mig)
        rates = fake_gpm.device_rates(spec, entry, slot=slot)
        return self.gpm.sample(f"{gpu.uuid}/{gpu_instance_id}", rates, now=self._clock())

    def profiling_between(
        self, earlier: ProfilingSample, later: ProfilingSample
    ) -> ProfilingReading:
        return self.gpm.between(earlier, later)

    def free_profiling_sample(self, sample: ProfilingSample) -> None:
        self.gpm.free(sample)

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
