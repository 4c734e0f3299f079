"""Decide what GPU tuning to do, pure: check the request against the card, refuse what is unsafe.

Power limit and locked clocks act on a whole physical GPU, so they are refused on MIG devices
and on GPUs another pod shares. A journal left by a sidecar that died before restoring tells
what the card looked like before it, so that value, not the leftover, is restored on exit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from kuberank_sidecar.devices import TuningLimits


class TuningState(enum.Enum):
    """The `state` label of kuberank_gpu_tuning_state and the `state` field of /tuning."""

    DISABLED = "disabled"
    PENDING = "pending"
    APPLIED = "applied"
    REFUSED = "refused"
    DENIED = "denied"
    FAILED = "failed"
    RESTORED = "restored"


class Refusal(enum.Enum):
    """Why tuning was refused; the `reason` label of kuberank_gpu_tuning_state."""

    MIG_DEVICE = "mig_device"
    SHARED_GPU = "shared_gpu"
    SHARING_UNKNOWN = "sharing_unknown"
    INVALID_REQUEST = "invalid_request"


@dataclass(frozen=True)
class GpuTuningStatus:
    """Where tuning stands on one GPU; reason is a short code, message the full sentence."""

    state: TuningState
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class ClockRange:
    min_mhz: int
    max_mhz: int

    def as_list(self) -> list[int]:
        return [self.min_mhz, self.max_mhz]


@dataclass(frozen=True)
class TuningRequest:
    """What the RerankerDeployment asks for (flags --power-limit-watts, --*-locked-clocks)."""

    power_limit_w: float | None = None
    gpu_clocks: ClockRange | None = None
    memory_clocks: ClockRange | None = None

    @property
    def enabled(self) -> bool:
        return (
            self.power_limit_w is not None
            or self.gpu_clocks is not None
            or self.memory_clocks is not None
        )


@dataclass(frozen=True)
class JournalEntry:
    """What a sidecar set on one GPU, written before setting it, removed after restoring."""

    previous_power_limit_w: float
    power_limit_w: float | None = None
    gpu_clocks: ClockRange | None = None
    memory_clocks: ClockRange | None = None
    pid: int = 0
    written_at: float = 0.0


@dataclass(frozen=True)
class TuningPlan:
    """For one GPU: the settings to apply (or why not), and how to restore the card after."""

    gpu_uuid: str
    refusal: Refusal | None = None
    message: str = ""
    set_power_limit_w: float | None = None
    lock_gpu_clocks: ClockRange | None = None
    lock_memory_clocks: ClockRange | None = None
    # On restore: the power limit to put back, and whether clocks must be unlocked.
    restore_power_limit_w: float | None = None
    reset_gpu_clocks: bool = False
    reset_memory_clocks: bool = False
    inherited: tuple[str, ...] = field(default=())

    @property
    def has_actions(self) -> bool:
        return (
            self.set_power_limit_w is not None
            or self.lock_gpu_clocks is not None
            or self.lock_memory_clocks is not None
        )

    def journal_entry(self, *, pid: int, now: float) -> JournalEntry:
        return JournalEntry(
            previous_power_limit_w=self.restore_power_limit_w or 0.0,
            power_limit_w=self.set_power_limit_w,
            gpu_clocks=self.lock_gpu_clocks,
            memory_clocks=self.lock_memory_clocks,
            pid=pid,
            written_at=now,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gpu_uuid": self.gpu_uuid,
            "refusal": None if self.refusal is None else self.refusal.value,
            "message": self.message,
            "set_power_limit_watts": self.set_power_limit_w,
            "lock_gpu_clocks_mhz": None
            if self.lock_gpu_clocks is None
            else self.lock_gpu_clocks.as_list(),
            "lock_memory_clocks_mhz": (
                None if self.lock_memory_clocks is None else self.lock_memory_clocks.as_list()
            ),
            "restore_power_limit_watts": self.restore_power_limit_w,
            "reset_gpu_clocks_on_exit": self.reset_gpu_clocks,
            "reset_memory_clocks_on_exit": self.reset_memory_clocks,
            "inherited": list(self.inherited),
        }


@dataclass(frozen=True)
class GpuFacts:
    """What planning needs to know about one physical GPU and who uses it."""

    gpu_uuid: str
    limits: TuningLimits
    mig_device: str | None = None
    mig_enabled: bool = False
    shared: bool = False
    sharing_known: bool = False
    # processes holding a CUDA context on the card (None: NVML cannot tell), and how many of
    # them this pod runs (its inference process)
    compute_processes: int | None = None
    own_processes: int = 1


def _clock_problem(flag: str, wanted: ClockRange, supported: tuple[int, ...]) -> str | None:
    if wanted.min_mhz > wanted.max_mhz:
        return f"{flag}: min {wanted.min_mhz} MHz is above max {wanted.max_mhz} MHz; swap them"
    if not supported:
        return (
            f"{flag}: this GPU reports no supported clocks, so clocks cannot be locked; drop {flag}"
        )
    low, high = min(supported), max(supported)
    if wanted.min_mhz < low or wanted.max_mhz > high:
        return (
            f"{flag}: {wanted.min_mhz}:{wanted.max_mhz} MHz is outside the supported "
            f"{low}:{high} MHz of this GPU; pick a range inside it"
        )
    return None


def inherited_settings(
    *, limits: TuningLimits, journal: JournalEntry | None
) -> tuple[float, bool, bool, tuple[str, ...]]:
    """(power limit to restore, unlock graphics clocks?, unlock memory clocks?, notes) from what
    the card and a predecessor's journal show before this sidecar touches anything."""
    if journal is not None:
        gpu_clocks = journal.gpu_clocks.as_list() if journal.gpu_clocks else "not locked"
        memory_clocks = journal.memory_clocks.as_list() if journal.memory_clocks else "not locked"
        notes = [
            f"a previous sidecar (pid {journal.pid}) left settings it did not restore: "
            f"power limit {journal.power_limit_w} W (was {journal.previous_power_limit_w} W), "
            f"graphics clocks {gpu_clocks}, memory clocks {memory_clocks}"
        ]
        return (
            journal.previous_power_limit_w,
            journal.gpu_clocks is not None,
            journal.memory_clocks is not None,
            tuple(notes),
        )
    notes = []
    if abs(limits.power_current_w - limits.power_default_w) >= 0.5:
        notes.append(
            f"power limit is {limits.power_current_w:g} W, not the default "
            f"{limits.power_default_w:g} W: set outside this sidecar, restored to "
            f"{limits.power_current_w:g} W on exit"
        )
    return limits.power_current_w, False, False, tuple(notes)


def plan_tuning(
    request: TuningRequest,
    facts: GpuFacts,
    *,
    journal: JournalEntry | None = None,
    assume_exclusive: bool = False,
) -> TuningPlan:
    """The plan for one GPU: actions checked against the card, or a refusal that says why."""
    restore_w, reset_gpu, reset_mem, notes = inherited_settings(
        limits=facts.limits, journal=journal
    )
    base = TuningPlan(
        gpu_uuid=facts.gpu_uuid,
        restore_power_limit_w=restore_w,
        reset_gpu_clocks=reset_gpu,
        reset_memory_clocks=reset_mem,
        inherited=notes,
    )

    def refuse(reason: Refusal, message: str) -> TuningPlan:
        return TuningPlan(
            gpu_uuid=base.gpu_uuid,
            refusal=reason,
            message=message,
            restore_power_limit_w=restore_w,
            reset_gpu_clocks=reset_gpu,
            reset_memory_clocks=reset_mem,
            inherited=notes,
        )

    if facts.mig_device is not None or facts.mig_enabled:
        where = f"MIG device {facts.mig_device}" if facts.mig_device else "MIG mode"
        return refuse(
            Refusal.MIG_DEVICE,
            f"GPU {facts.gpu_uuid} runs {where}: power limit and locked clocks act on the whole "
            "GPU and other slices belong to other pods; remove gpu.powerLimitWatts and "
            "gpu.lockedClocks for MIG resources",
        )
    if facts.shared:
        return refuse(
            Refusal.SHARED_GPU,
            f"GPU {facts.gpu_uuid} is shared with other pods (kubelet lists it for another pod, "
            "or it is a time-slicing replica): tuning would change their GPU too; give the pod "
            "a whole GPU or drop the tuning request",
        )
    if facts.compute_processes is not None and facts.compute_processes > facts.own_processes:
        return refuse(
            Refusal.SHARED_GPU,
            f"GPU {facts.gpu_uuid} is shared: {facts.compute_processes} processes hold a CUDA "
            f"context on it and this pod runs {facts.own_processes}; tuning would change the "
            "others' GPU too; check which pods the node gave this GPU "
            "(nvidia-smi --query-compute-apps=pid,process_name --format=csv)",
        )
    if not facts.sharing_known and not assume_exclusive:
        return refuse(
            Refusal.SHARING_UNKNOWN,
            f"cannot tell whether GPU {facts.gpu_uuid} is shared with other pods: mount the "
            "kubelet pod-resources socket (/var/lib/kubelet/pod-resources), or pass "
            "--tuning-assume-exclusive where the node gives each pod whole GPUs",
        )
    limits = facts.limits
    problems: list[str] = []
    if request.power_limit_w is not None and not (
        limits.power_min_w <= request.power_limit_w <= limits.power_max_w
    ):
        problems.append(
            f"--power-limit-watts: {request.power_limit_w:g} W is outside this GPU's "
            f"{limits.power_min_w:g}–{limits.power_max_w:g} W; pick a value inside it"
        )
    if request.gpu_clocks is not None:
        problem = _clock_problem(
            "--gpu-locked-clocks", request.gpu_clocks, limits.graphics_clocks_mhz
        )
        if problem:
            problems.append(problem)
    if request.memory_clocks is not None:
        problem = _clock_problem(
            "--memory-locked-clocks", request.memory_clocks, limits.memory_clocks_mhz
        )
        if problem:
            problems.append(problem)
    if problems:
        return refuse(Refusal.INVALID_REQUEST, "; ".join(problems))
    return TuningPlan(
        gpu_uuid=facts.gpu_uuid,
        message="checked against the card",
        set_power_limit_w=request.power_limit_w,
        lock_gpu_clocks=request.gpu_clocks,
        lock_memory_clocks=request.memory_clocks,
        restore_power_limit_w=restore_w,
        reset_gpu_clocks=reset_gpu or request.gpu_clocks is not None,
        reset_memory_clocks=reset_mem or request.memory_clocks is not None,
        inherited=notes,
    )


def parse_clock_range(flag: str, value: str) -> ClockRange:
    """`MIN:MAX` in MHz; the error names the flag, what is wrong, and the fix."""
    parts = value.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"{flag}: {value!r} is not MIN:MAX in MHz (for example 1200:1980)")
    low, high = int(parts[0]), int(parts[1])
    if low > high:
        raise ValueError(f"{flag}: min {low} MHz is above max {high} MHz; write {high}:{low}")
    return ClockRange(min_mhz=low, max_mhz=high)
