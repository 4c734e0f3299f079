"""Fitting the token budget into device memory at start-up: measure what a token costs, plan from
the memory actually free (other processes count), warm up at the plan, and on an out-of-memory
error halve the budget and warm up again, down to one longest sequence, before giving up with a
message that says how much memory was free and how much was needed.

It calls the model through the protocol below (blocking: run it off the event loop)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from kuberank_inference.engine.budget import BudgetReason, plan_token_budget, tokens_that_fit
from kuberank_inference.engine.contracts import DeviceMemory, ModelInfo
from kuberank_inference.failures import DeviceOutOfMemoryError

log = logging.getLogger(__name__)
GIB = 2**30
MEASURE_SEQUENCES = 8  # the activation cost per token is measured on this many longest sequences


class Fittable(Protocol):
    """What the fitting asks of a model (a ServableModel is one)."""

    @property
    def info(self) -> ModelInfo: ...

    def warm_up(self, *, max_batch_tokens: int) -> None: ...

    def activation_bytes_per_token(self, *, tokens: int) -> float: ...

    def resident_bytes(self) -> int: ...

    def device_memory(self) -> DeviceMemory | None: ...

    def free_device_bytes(self) -> int | None: ...


class StartupMemoryError(Exception):
    """Even one longest sequence does not fit in the device memory free to this process."""


@dataclass(frozen=True, slots=True)
class BudgetInForce:
    """The token budget the server runs with, and the facts it was planned from."""

    token_budget: int
    configured: int
    reason: BudgetReason
    free_bytes: int | None = None
    total_bytes: int | None = None
    resident_bytes: int | None = None
    usable_bytes: int | None = None
    bytes_per_token: float = 0.0
    warm_up_attempts: int = 1

    def fits(self, *, tokens: int, batches_in_flight: int) -> bool:
        """Whether `batches_in_flight` batches of `tokens` fit in the memory free under the
        safety margin, by the same plan as the budget (always on CPU, where nothing is fitted);
        after a warm-up OOM no more than the lowered budget fits."""
        if self.usable_bytes is None or self.bytes_per_token <= 0:
            return True
        if self.reason == "warm_up_oom" and tokens > self.token_budget:
            return False
        room = tokens_that_fit(
            usable_bytes=self.usable_bytes,
            bytes_per_token=self.bytes_per_token,
            batches_in_flight=batches_in_flight,
        )
        return tokens <= room

    def as_json(self) -> dict[str, object]:
        return {
            "token_budget": self.token_budget,
            "token_budget_configured": self.configured,
            "token_budget_reason": self.reason,
            "device_free_bytes_at_start": self.free_bytes,
            "device_usable_bytes": self.usable_bytes,
        }


def fit_token_budget(
    model: Fittable, *, configured: int, safety_margin: float, batches_in_flight: int
) -> BudgetInForce:
    """Plan the budget from free memory, warm up, halve on OOM; StartupMemoryError at the end."""
    floor = model.info.max_input_length
    memory = model.device_memory()
    if memory is None:  # CPU: nothing to fit
        model.warm_up(max_batch_tokens=configured)
        return BudgetInForce(token_budget=configured, configured=configured, reason="configured")
    free = model.free_device_bytes()
    resident = model.resident_bytes()
    facts = _Facts(free=free, total=memory.total, resident=resident, floor=floor)
    per_token = _measure(model, start=min(configured, MEASURE_SEQUENCES * floor), facts=facts)
    plan = plan_token_budget(
        configured=configured,
        device_total_bytes=memory.total,
        safety_margin=safety_margin,
        resident_bytes=resident,
        bytes_per_token=per_token,
        batches_in_flight=batches_in_flight,
        floor=floor,
        device_free_bytes=free,
    )
    budget, reason, attempts = plan.token_budget, plan.reason, 1
    while True:
        try:
            model.warm_up(max_batch_tokens=budget)
            break
        except DeviceOutOfMemoryError as oom:
            if budget <= floor:
                raise StartupMemoryError(facts.message(per_token=per_token, detail=oom)) from None
            lowered = max(floor, budget // 2)
            log.warning(
                "warm-up at a budget of %d tokens ran out of memory; trying %d (%s)",
                budget,
                lowered,
                oom.detail,
            )
            budget, reason, attempts = lowered, "warm_up_oom", attempts + 1
    log.info(
        "device memory: %s free at start-up, %s usable for activations at %.0f bytes/token -> "
        "token budget %d (%s)",
        _gib(free),
        _gib(plan.usable_bytes),
        per_token,
        budget,
        reason,
    )
    return BudgetInForce(
        token_budget=budget,
        configured=configured,
        reason=reason,
        free_bytes=free,
        total_bytes=memory.total,
        resident_bytes=resident,
        usable_bytes=plan.usable_bytes,
        bytes_per_token=per_token,
        warm_up_attempts=attempts,
    )


@dataclass(frozen=True, slots=True)
class _Facts:
    free: int | None
    total: int
    resident: int
    floor: int

    def message(self, *, per_token: float | None, detail: DeviceOutOfMemoryError) -> str:
        needed = (
            f"about {_gib(int(per_token * self.floor))} for its activations"
            if per_token
            else "more than that for its activations"
        )
        others = ""
        if self.free is not None:
            others = (
                f"; other processes hold {_gib(max(0, self.total - self.free - self.resident))}"
            )
        return (
            f"not enough device memory for even one sequence of {self.floor} tokens: "
            f"{_gib(self.free)} was free at start-up (device total {_gib(self.total)}, this "
            f"model's weights {_gib(self.resident)}{others}), and one sequence needs {needed} "
            f"({detail.detail}). Free memory on the device, lower --max-input-length, or run "
            "on a device with more memory"
        )


def _measure(model: Fittable, *, start: int, facts: _Facts) -> float:
    """Activation bytes per token, measured on a batch that is halved until it fits."""
    tokens = max(start, facts.floor)
    while True:
        try:
            return model.activation_bytes_per_token(tokens=tokens)
        except DeviceOutOfMemoryError as oom:
            if tokens <= facts.floor:
                raise StartupMemoryError(facts.message(per_token=None, detail=oom)) from None
            tokens = max(facts.floor, tokens // 2)


def _gib(size: int | None) -> str:
    return "unknown" if size is None else f"{size / GIB:.2f} GiB"
