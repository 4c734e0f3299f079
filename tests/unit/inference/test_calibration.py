"""The start-up calibration: the choice from a measured curve (pure), and the measuring loop run
against a fake model whose throughput curve the test gives (a fake clock advances by the time
each batch would take), including settings that do not fit and trials that run out of memory."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from bench.inference.workload import pair_length
from kuberank_inference.engine.calibration import (
    DEFAULT_BATCHES_IN_FLIGHT,
    DEFAULT_BUDGETS,
    CurvePoint,
    Grid,
    MeasureLimits,
    Setting,
    calibrate,
    choose_setting,
    design_pair_lengths,
    measure_curve,
    plan_grid,
    synthetic_input,
)
from kuberank_inference.engine.contracts import (
    Abandoned,
    BatchHandle,
    DeviceMemory,
    ModelInfo,
    ModelInput,
    Output,
    PairsInput,
    TokenizedSequence,
)
from kuberank_inference.failures import DeviceOutOfMemoryError
from tests.unit.inference.fakes import FakeSequence, fake_info

FALLBACK = Setting(16384, 2)


def measured(tokens: int, depth: int, rate: float) -> CurvePoint:
    return CurvePoint(Setting(tokens, depth), "measured", rate, batches=10, seconds=1.0)


# --- the choice ------------------------------------------------------------------------------


def test_the_largest_setting_within_the_tolerance_of_the_best_is_chosen() -> None:
    curve = [
        measured(8192, 1, 1800.0),
        measured(16384, 2, 2700.0),  # within 3 % of 2757, but smaller
        measured(32768, 2, 2757.0),  # the best
        measured(65536, 2, 2720.0),  # within 3 %, the most tokens in flight that is
        measured(65536, 3, 2600.0),  # more in flight, but 6 % slower
    ]
    choice = choose_setting(curve, tolerance=0.03, fallback=FALLBACK)
    assert choice.state == "calibrated"
    assert choice.setting == Setting(65536, 2)
    assert choice.pairs_per_second == 2720.0
    assert choice.best_pairs_per_second == 2757.0
    assert "the largest within 3% of the best" in choice.reason
    assert "32768 tokens x 2" in choice.reason


def test_with_no_tolerance_the_best_is_chosen() -> None:
    curve = [measured(8192, 1, 1000.0), measured(65536, 3, 999.0), measured(16384, 2, 1001.0)]
    choice = choose_setting(curve, tolerance=0.0, fallback=FALLBACK)
    assert choice.setting == Setting(16384, 2)
    assert "the best measured" in choice.reason


def test_at_one_budget_the_most_batches_in_flight_within_tolerance_win() -> None:
    curve = [measured(32768, 1, 1000.0), measured(32768, 2, 1000.0), measured(32768, 3, 990.0)]
    assert choose_setting(curve, tolerance=0.03, fallback=FALLBACK).setting == Setting(32768, 3)
    curve[2] = measured(32768, 3, 900.0)
    assert choose_setting(curve, tolerance=0.03, fallback=FALLBACK).setting == Setting(32768, 2)


def test_equal_tokens_in_flight_go_to_the_larger_budget() -> None:
    curve = [measured(16384, 2, 1000.0), measured(32768, 1, 1000.0)]
    assert choose_setting(curve, tolerance=0.03, fallback=FALLBACK).setting == Setting(32768, 1)


def test_settings_not_measured_never_win() -> None:
    curve = [
        CurvePoint(Setting(8192, 1), "out_of_time"),
        measured(16384, 1, 500.0),
        CurvePoint(Setting(65536, 3), "unfit_memory"),
        CurvePoint(Setting(65536, 2), "out_of_memory"),
    ]
    assert choose_setting(curve, tolerance=0.03, fallback=FALLBACK).setting == Setting(16384, 1)


def test_nothing_measured_keeps_the_fallback_and_says_so() -> None:
    curve = [CurvePoint(Setting(65536, 3), "unfit_memory")]
    choice = choose_setting(curve, tolerance=0.03, fallback=FALLBACK)
    assert choice.state == "nothing_measured"
    assert choice.setting == FALLBACK
    assert choice.pairs_per_second is None
    assert "16384 tokens x 2" in choice.reason


# --- the grid --------------------------------------------------------------------------------


def test_the_grid_is_every_budget_with_every_depth_smallest_first() -> None:
    grid = plan_grid(
        budgets=(32768, 8192),
        batches_in_flight=(2, 1),
        fixed_budget=None,
        fixed_batches_in_flight=None,
        floor=512,
    )
    assert grid is not None
    assert grid.settings() == [
        Setting(8192, 1),
        Setting(8192, 2),
        Setting(32768, 1),
        Setting(32768, 2),
    ]


def test_an_explicit_flag_fixes_its_axis_and_both_leave_nothing_to_calibrate() -> None:
    kwargs: dict[str, object] = {
        "budgets": DEFAULT_BUDGETS,
        "batches_in_flight": (1, 2, 3),
        "floor": 512,
    }
    budget_fixed = plan_grid(fixed_budget=20000, fixed_batches_in_flight=None, **kwargs)  # type: ignore[arg-type]
    assert budget_fixed == Grid(budgets=(20000,), batches_in_flight=(1, 2, 3))
    depth_fixed = plan_grid(fixed_budget=None, fixed_batches_in_flight=3, **kwargs)  # type: ignore[arg-type]
    assert depth_fixed == Grid(budgets=DEFAULT_BUDGETS, batches_in_flight=(3,))
    assert plan_grid(fixed_budget=20000, fixed_batches_in_flight=3, **kwargs) is None  # type: ignore[arg-type]


def test_budgets_below_one_longest_sequence_are_dropped() -> None:
    grid = plan_grid(
        budgets=(256, 1024, 4096),
        batches_in_flight=(1,),
        fixed_budget=None,
        fixed_batches_in_flight=None,
        floor=1024,
    )
    assert grid is not None
    assert grid.budgets == (1024, 4096)


# --- the synthetic workload ------------------------------------------------------------------


def test_the_pair_lengths_are_drawn_as_the_benchmark_draws_them() -> None:
    rng = random.Random(7)
    assert design_pair_lengths(200, seed=7) == [
        pair_length(rng, mean_tokens=288) for _ in range(200)
    ]
    lengths = design_pair_lengths(5000, seed=0)
    assert min(lengths) >= 64
    assert max(lengths) <= 512
    assert 280 <= sum(lengths) / len(lengths) <= 296


def test_synthetic_pairs_are_about_as_long_as_asked() -> None:
    request = synthetic_input(task="rerank", lengths=[100, 300], max_input_length=512)
    assert isinstance(request, PairsInput)
    assert [len(text.split()) + len(request.query.split()) + 4 for text in request.texts] == [
        100,
        300,
    ]
    embed = synthetic_input(task="embed", lengths=[600], max_input_length=512)
    assert [len(text.split()) for text in embed.texts] == [510]


# --- the measuring loop ----------------------------------------------------------------------


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class CurveRunner:
    """A fake model whose throughput at (batch tokens, batches in flight) is `rate(...)` pairs/s:
    reading a batch back advances the clock by the time its pairs would take at that rate."""

    rate: Callable[[int, int], float]
    clock: FakeClock
    oom_above: int | None = None  # tokens in flight (over all launched batches) that run out
    info: ModelInfo = field(default_factory=lambda: fake_info(max_input_length=512))
    in_flight: list[list[FakeSequence]] = field(default_factory=list)
    started_batches: list[int] = field(default_factory=list)
    budget_seen: int = 0

    def encode(
        self, request: ModelInput, *, abandoned: Abandoned | None = None
    ) -> list[TokenizedSequence]:
        assert isinstance(request, PairsInput)
        query = len(request.query.split())
        return [FakeSequence(text, len(text.split()) + query + 4) for text in request.texts]

    def start_batch(self, sequences: Sequence[TokenizedSequence]) -> BatchHandle:
        batch = [s for s in sequences if isinstance(s, FakeSequence)]
        tokens = sum(s.num_tokens for s in batch)
        in_flight = tokens + sum(s.num_tokens for b in self.in_flight for s in b)
        if self.oom_above is not None and in_flight > self.oom_above:
            raise DeviceOutOfMemoryError(tokens=tokens, detail="fake device is full")
        self.in_flight.append(batch)
        self.started_batches.append(tokens)
        return batch

    def finish_batch(self, handle: BatchHandle) -> list[Output]:
        assert isinstance(handle, list)
        depth = len(self.in_flight)
        self.in_flight.remove(handle)
        budget = _budget_class(sum(s.num_tokens for s in handle))
        self.clock.now += len(handle) / self.rate(budget, depth)
        return [0.0] * len(handle)

    def device_memory(self) -> DeviceMemory | None:
        return None


def _budget_class(tokens: int) -> int:
    """The grid budget a batch of `tokens` was cut for (batches fill to just under it)."""
    return next(budget for budget in (8192, 16384, 32768, 65536) if tokens <= budget)


def saturating(tokens: int, depth: int) -> float:
    """Throughput that rises with the budget and flattens: 65536x3 is the best and the largest,
    32768x2 is within 2 % of it, and a deeper pipeline helps by a few percent."""
    base = {8192: 1800.0, 16384: 2400.0, 32768: 2650.0, 65536: 2700.0}[tokens]
    return base * (1.0 + 0.01 * (depth - 1))


def run(
    runner: CurveRunner,
    *,
    grid: Grid,
    fits: Callable[[Setting], bool] = lambda setting: True,
    seconds: float = 20.0,
) -> list[CurvePoint]:
    return measure_curve(
        runner, grid=grid, fits=fits, limits=MeasureLimits(seconds=seconds), clock=runner.clock
    )


DEFAULT_GRID = Grid(budgets=DEFAULT_BUDGETS, batches_in_flight=DEFAULT_BATCHES_IN_FLIGHT)


def test_the_loop_measures_the_given_curve_and_the_choice_follows_it() -> None:
    clock = FakeClock()
    runner = CurveRunner(rate=saturating, clock=clock)
    curve = run(runner, grid=DEFAULT_GRID)
    assert [point.outcome for point in curve] == ["measured"] * 12
    for point in curve:
        expected = saturating(point.setting.max_batch_tokens, point.setting.batches_in_flight)
        assert point.pairs_per_second == pytest.approx(expected, rel=0.02)
        assert point.batches >= 4
    assert choose_setting(curve, tolerance=0.03, fallback=FALLBACK).setting == Setting(65536, 3)
    # without the largest (say it did not fit), 65536 x 2 is within 1 % of the best left
    within = [point for point in curve if point.setting != Setting(65536, 3)]
    assert choose_setting(within, tolerance=0.03, fallback=FALLBACK).setting == Setting(65536, 2)
    assert clock.now <= 20.0 + 2.0  # each trial stops once its share is spent (one batch over)


def test_batches_never_exceed_the_trials_budget_and_hold_design_lengths() -> None:
    runner = CurveRunner(rate=saturating, clock=FakeClock())
    run(runner, grid=Grid(budgets=(8192,), batches_in_flight=(1,)))
    assert runner.started_batches
    assert max(runner.started_batches) <= 8192
    assert min(runner.started_batches) > 8192 - 512  # filled up to one longest pair short


def test_a_setting_that_does_not_fit_is_never_tried() -> None:
    runner = CurveRunner(rate=saturating, clock=FakeClock())

    def fits(setting: Setting) -> bool:
        return setting.max_batch_tokens * setting.batches_in_flight <= 65536

    curve = run(runner, grid=DEFAULT_GRID, fits=fits)
    unfit = {point.setting for point in curve if point.outcome == "unfit_memory"}
    assert unfit == {Setting(32768, 3), Setting(65536, 2), Setting(65536, 3)}
    assert max(runner.started_batches) <= 65536
    choice = choose_setting(curve, tolerance=0.0, fallback=FALLBACK)
    assert choice.setting == Setting(65536, 1)


def test_an_out_of_memory_trial_marks_it_and_every_larger_setting_unfit() -> None:
    runner = CurveRunner(rate=saturating, clock=FakeClock(), oom_above=70000)
    curve = run(runner, grid=DEFAULT_GRID)
    outcomes = {point.setting: point.outcome for point in curve}
    assert outcomes[Setting(32768, 2)] == "measured"
    assert outcomes[Setting(32768, 3)] == "out_of_memory"
    assert outcomes[Setting(65536, 1)] == "measured"
    assert outcomes[Setting(65536, 2)] == "out_of_memory"
    assert outcomes[Setting(65536, 3)] == "out_of_memory"  # never tried: 65536x2 failed
    assert not runner.in_flight  # what was launched before the error was read back
    choice = choose_setting(curve, tolerance=0.0, fallback=FALLBACK)
    assert choice.setting == Setting(65536, 1)


def test_settings_past_the_time_limit_are_not_measured() -> None:
    slow = CurveRunner(rate=lambda tokens, depth: 100.0, clock=FakeClock())
    curve = run(slow, grid=DEFAULT_GRID, seconds=10.0)
    outcomes = [point.outcome for point in curve]
    assert outcomes[0] == "measured"
    assert "out_of_time" in outcomes
    assert outcomes.index("out_of_time") > 0


def test_calibrate_reports_the_curve_the_choice_and_the_device() -> None:
    clock = FakeClock()
    runner = CurveRunner(rate=saturating, clock=clock)
    report = calibrate(
        runner,
        grid=DEFAULT_GRID,
        fits=lambda setting: True,
        limits=MeasureLimits(seconds=20.0),
        tolerance=0.03,
        fallback=FALLBACK,
        clock=clock,
    )
    body = report.as_json()
    assert body["state"] == "calibrated"
    assert body["max_batch_tokens"] == 65536
    assert body["batches_in_flight"] == 3
    assert body["device_name"] == "cpu"
    assert body["time_limit_seconds"] == 20.0
    curve = body["curve"]
    assert isinstance(curve, list)
    assert len(curve) == 12
    assert curve[0]["outcome"] == "measured"
    assert report.seconds == pytest.approx(clock.now)
