"""How many tokens one batch may hold: the configured budget, capped by what fits in device memory
under the safety margin, halved after an out-of-memory error and restored step by step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BudgetReason = Literal["configured", "device_memory", "free_memory", "warm_up_oom", "calibrated"]
"""Why the budget in force is what it is: as configured; capped by the process's share of the
device (1 - margin); capped by the memory free at start-up (other processes hold the rest);
lowered again because the warm-up ran out of memory at the planned budget; chosen by the
start-up calibration (engine/calibration.py) from what fitted."""


def tokens_that_fit(*, usable_bytes: int, bytes_per_token: float, batches_in_flight: int) -> int:
    """Tokens per batch so that `batches_in_flight` batches of activations fit in `usable_bytes`."""
    return int(usable_bytes / (bytes_per_token * max(1, batches_in_flight)))


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """The token budget that fits in device memory, and why."""

    token_budget: int
    usable_bytes: int
    bytes_per_token: float
    limited_by_memory: bool
    reason: BudgetReason = "configured"


def plan_token_budget(
    *,
    configured: int,
    device_total_bytes: int,
    safety_margin: float,
    resident_bytes: int,
    bytes_per_token: float,
    batches_in_flight: int,
    floor: int,
    device_free_bytes: int | None = None,
) -> MemoryPlan:
    """Cap the configured budget so that `batches_in_flight` batches of activations fit in
    what this process may still take: its share of the device (1 - safety_margin) less the
    weights, and no more than is free. `device_free_bytes` is measured with the weights already
    resident, so usable = min(free, total * (1 - margin) - resident), which is
    min(free before loading, total * (1 - margin)) - resident: other processes count."""
    if not 0.0 <= safety_margin < 1.0:
        raise ValueError(f"safety_margin must be in [0, 1), got {safety_margin}")
    allowed = int(device_total_bytes * (1.0 - safety_margin))
    share = max(0, allowed - resident_bytes)
    usable = share if device_free_bytes is None else max(0, min(share, device_free_bytes))
    if bytes_per_token <= 0:
        return MemoryPlan(configured, usable, bytes_per_token, limited_by_memory=False)
    fits = tokens_that_fit(
        usable_bytes=usable, bytes_per_token=bytes_per_token, batches_in_flight=batches_in_flight
    )
    budget = max(floor, min(configured, fits))
    limited = fits < configured
    reason: BudgetReason = "configured"
    if limited:
        reason = "free_memory" if usable < share else "device_memory"
    return MemoryPlan(budget, usable, bytes_per_token, limited_by_memory=limited, reason=reason)


class TokenBudget:
    """The effective token budget over time.

    After an out-of-memory error the budget drops to half of what the failed batch held (never
    below `floor`, the longest single sequence). Every `recovery_seconds` without another error it
    doubles again, up to the configured ceiling.
    """

    def __init__(self, *, ceiling: int, floor: int, recovery_seconds: float) -> None:
        if floor < 1 or ceiling < floor:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor={floor} ceiling={ceiling}")
        self._ceiling = ceiling
        self._floor = floor
        self._recovery_seconds = recovery_seconds
        self._current = ceiling
        self._last_change = 0.0

    @property
    def ceiling(self) -> int:
        return self._ceiling

    def current(self, *, now: float) -> int:
        while self._current < self._ceiling and now - self._last_change >= self._recovery_seconds:
            self._current = min(self._ceiling, self._current * 2)
            self._last_change += self._recovery_seconds
        return self._current

    def record_oom(self, *, now: float, batch_tokens: int) -> int:
        reduced = min(self._current, batch_tokens) // 2
        self._current = max(self._floor, reduced)
        self._last_change = now
        return self._current
