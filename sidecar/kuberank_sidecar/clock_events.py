"""NVML clock-event reasons ("throttle reasons"): why the GPU runs below its top clock."""

from __future__ import annotations

# Bit values of nvmlClocksEventReason*; the keys are the `reason` label values.
CLOCK_EVENT_REASONS: dict[str, int] = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}


def active_reasons(mask: int) -> dict[str, bool]:
    """Each known reason and whether its bit is set in an NVML clock-event bitmask."""
    return {name: bool(mask & bit) for name, bit in CLOCK_EVENT_REASONS.items()}
