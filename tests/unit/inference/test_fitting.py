"""The token budget fitted at start-up with a fake device: planned from free memory (other
processes count), halved while the warm-up runs out of memory, a clear error at one sequence."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kuberank_inference.engine.budget import plan_token_budget
from kuberank_inference.engine.contracts import DeviceMemory, ModelInfo
from kuberank_inference.engine.fitting import BudgetInForce, StartupMemoryError, fit_token_budget
from kuberank_inference.failures import DeviceOutOfMemoryError
from tests.unit.inference.fakes import fake_info

GIB = 2**30


@dataclass
class FakeDevice:
    """A model on a fake GPU: a warm-up or measurement over `fits_tokens` runs out of memory."""

    total: int = 80 * GIB
    free: int | None = 70 * GIB
    resident: int = GIB
    per_token: float = 100_000.0
    fits_tokens: int | None = None
    info: ModelInfo = field(default_factory=lambda: fake_info(max_input_length=512))
    warm_ups: list[int] = field(default_factory=list)
    measured: list[int] = field(default_factory=list)
    on_gpu: bool = True

    def _use(self, tokens: int) -> None:
        if self.fits_tokens is not None and tokens > self.fits_tokens:
            raise DeviceOutOfMemoryError(tokens=tokens, detail="CUDA out of memory (fake)")

    def warm_up(self, *, max_batch_tokens: int) -> None:
        self.warm_ups.append(max_batch_tokens)
        self._use(max_batch_tokens)

    def activation_bytes_per_token(self, *, tokens: int) -> float:
        self.measured.append(tokens)
        self._use(tokens)
        return self.per_token

    def resident_bytes(self) -> int:
        return self.resident

    def device_memory(self) -> DeviceMemory | None:
        if not self.on_gpu:
            return None
        return DeviceMemory(total=self.total, allocated=self.resident, reserved=0, peak_allocated=0)

    def free_device_bytes(self) -> int | None:
        return self.free if self.on_gpu else None


def _fit(device: FakeDevice, configured: int = 16384) -> BudgetInForce:
    return fit_token_budget(device, configured=configured, safety_margin=0.1, batches_in_flight=2)


def test_free_memory_caps_the_budget_below_the_device_share() -> None:
    plan = plan_token_budget(
        configured=65536,
        device_total_bytes=141 * GIB,
        safety_margin=0.1,
        resident_bytes=GIB,
        bytes_per_token=100_000.0,
        batches_in_flight=2,
        floor=512,
        device_free_bytes=2 * GIB,  # another process holds the rest
    )
    assert plan.usable_bytes == 2 * GIB  # min(free, total * 0.9 - resident)
    assert plan.token_budget == int(2 * GIB / (100_000.0 * 2))
    assert plan.reason == "free_memory"


def test_the_margin_caps_when_free_memory_is_plenty() -> None:
    plan = plan_token_budget(
        configured=1 << 20,
        device_total_bytes=10 * GIB,
        safety_margin=0.1,
        resident_bytes=GIB,
        bytes_per_token=100_000.0,
        batches_in_flight=2,
        floor=512,
        device_free_bytes=9 * GIB,
    )
    assert plan.usable_bytes == int(10 * GIB * 0.9) - GIB
    assert plan.reason == "device_memory"


def test_a_roomy_device_keeps_the_configured_budget() -> None:
    budget = _fit(FakeDevice())
    assert budget.token_budget == 16384
    assert budget.reason == "configured"
    assert budget.free_bytes == 70 * GIB


def test_the_budget_is_planned_from_free_memory() -> None:
    device = FakeDevice(free=GIB)
    budget = _fit(device)
    assert budget.token_budget == int(GIB / (100_000.0 * 2))
    assert budget.reason == "free_memory"
    assert device.warm_ups == [budget.token_budget]


def test_a_warm_up_out_of_memory_halves_the_budget_until_it_fits() -> None:
    device = FakeDevice(fits_tokens=3000)
    budget = _fit(device)
    assert device.warm_ups == [16384, 8192, 4096, 2048]
    assert budget.token_budget == 2048
    assert budget.reason == "warm_up_oom"
    assert budget.warm_up_attempts == 4
    assert device.measured == [4096, 2048]  # 8 sequences, halved once


def test_halving_stops_at_one_longest_sequence() -> None:
    device = FakeDevice(fits_tokens=512)
    budget = _fit(device, configured=5000)
    assert device.warm_ups == [5000, 2500, 1250, 625, 512]
    assert budget.token_budget == 512


def test_not_even_one_sequence_fits_names_free_and_needed_memory() -> None:
    device = FakeDevice(free=GIB // 2, per_token=2_000_000.0, fits_tokens=511)
    with pytest.raises(StartupMemoryError) as failed:
        _fit(device)
    message = str(failed.value)
    assert "one sequence of 512 tokens" in message
    assert "0.50 GiB was free at start-up" in message
    assert "device total 80.00 GiB" in message
    assert "weights 1.00 GiB" in message
    assert "other processes hold 78.50 GiB" in message
    assert "--max-input-length" in message
    assert device.warm_ups == []  # the measurement already failed at one sequence


def test_a_warm_up_failing_at_one_sequence_says_what_it_needs() -> None:
    device = FakeDevice(free=GIB, per_token=1_000_000.0)
    device.fits_tokens = None
    calls: list[int] = []

    def warm_up(*, max_batch_tokens: int) -> None:
        calls.append(max_batch_tokens)
        raise DeviceOutOfMemoryError(tokens=max_batch_tokens, detail="CUDA out of memory")

    device.warm_up = warm_up  # type: ignore[method-assign]
    with pytest.raises(StartupMemoryError, match=r"needs about 0\.48 GiB for its activations"):
        _fit(device)
    assert calls[-1] == 512


def test_cpu_warms_up_at_the_configured_budget() -> None:
    device = FakeDevice(on_gpu=False)
    budget = _fit(device, configured=4096)
    assert device.warm_ups == [4096]
    assert budget.token_budget == 4096
    assert budget.free_bytes is None


def test_a_setting_fits_when_its_batches_in_flight_fit_in_the_usable_memory() -> None:
    # the calibration asks this of each (budget, batches in flight) before it tries it
    budget = _fit(FakeDevice(free=GIB), configured=65536)
    room = int(GIB / 100_000.0)  # tokens of activations the usable memory holds
    assert budget.fits(tokens=room, batches_in_flight=1)
    assert not budget.fits(tokens=room + 1, batches_in_flight=1)
    assert budget.fits(tokens=room // 3, batches_in_flight=3)
    assert not budget.fits(tokens=room // 2 + 1, batches_in_flight=2)


def test_after_a_warm_up_oom_no_more_than_the_lowered_budget_fits() -> None:
    budget = _fit(FakeDevice(fits_tokens=3000))
    assert budget.reason == "warm_up_oom"
    assert budget.fits(tokens=2048, batches_in_flight=1)
    assert not budget.fits(tokens=4096, batches_in_flight=1)


def test_on_cpu_every_setting_fits() -> None:
    budget = BudgetInForce(token_budget=16384, configured=16384, reason="configured")
    assert budget.fits(tokens=1 << 20, batches_in_flight=8)
