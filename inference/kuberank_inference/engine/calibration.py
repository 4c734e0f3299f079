"""Calibration at start-up: measure the server's own throughput (pairs/s) at a few token budgets
and batches in flight on a synthetic workload shaped like the DESIGN one (50-document requests,
pairs of 64-512 tokens, mean 288), then keep the largest setting (most tokens in flight) within a
tolerance of the best.

Why the largest: the curve is measured with the model alone, where it is flat at the top (on an
H200, base 12x768: 32768 x 2 at 8,470 pairs/s, 65536 x 3 at 8,621). Under 64 clients the same
two settings served 6,015 and 8,325 pairs/s: each batch also costs the server a fixed share of
host time (launches, results handed to requests, contended by the event loop), which the
isolated measurement does not see and larger batches spread over more pairs. A lone request is
smaller than any budget, so its latency does not depend on the choice; memory is already
checked (a setting that does not fit is never tried).

Two halves: `choose_setting` is the pure decision over a measured curve; `measure_curve` is the
loop that measures it, talking to the model only through the `ModelRunner` protocol (blocking:
run it off the event loop), with the clock given, so tests drive it with a fake runner whose
throughput curve they choose. A setting the memory plan says does not fit is never tried; an
out-of-memory error during a trial marks that setting (and every larger one) unfit.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from kuberank_inference.engine.contracts import (
    BatchHandle,
    ModelInput,
    ModelRunner,
    PairsInput,
    TextsInput,
    TokenizedSequence,
)
from kuberank_inference.failures import DeviceOutOfMemoryError

log = logging.getLogger(__name__)

DEFAULT_BUDGETS = (8192, 16384, 32768, 65536)
DEFAULT_BATCHES_IN_FLIGHT = (1, 2, 3)
DESIGN_MEAN_TOKENS = 288  # bench_rerank --mean-tokens 288, the DESIGN workload
MIN_PAIR_TOKENS = 64
MAX_PAIR_TOKENS = 512
POOL_SEQUENCES = 512  # synthetic pairs tokenized once and cycled through by every trial
QUERY_WORDS = 9

Outcome = Literal["measured", "unfit_memory", "out_of_memory", "out_of_time"]
"""What became of one point of the grid: measured; never tried because the memory plan (free
memory under the safety margin) has no room for it; ran out of memory when tried, or a smaller
setting did; not reached within the time limit."""

CalibrationState = Literal["calibrated", "fixed", "off", "nothing_measured"]
"""calibrated: the setting was chosen from the curve; fixed: --max-batch-tokens and
--batches-in-flight were both given, so nothing was left to choose; off: calibration was not
asked for (--calibration off, or auto on CPU); nothing_measured: no point could be measured, the
configured setting stands."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One point of the grid: a token budget per batch and how many batches run at once."""

    max_batch_tokens: int
    batches_in_flight: int


@dataclass(frozen=True, slots=True)
class CurvePoint:
    setting: Setting
    outcome: Outcome
    pairs_per_second: float | None = None
    batches: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "max_batch_tokens": self.setting.max_batch_tokens,
            "batches_in_flight": self.setting.batches_in_flight,
            "outcome": self.outcome,
            "pairs_per_second": _rounded(self.pairs_per_second),
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class Grid:
    """The settings to try: every budget with every batches-in-flight count."""

    budgets: tuple[int, ...]
    batches_in_flight: tuple[int, ...]

    def settings(self) -> list[Setting]:
        """Smallest first: budgets ascending, then batches in flight ascending."""
        return [
            Setting(budget, depth)
            for budget in sorted(set(self.budgets))
            for depth in sorted(set(self.batches_in_flight))
        ]


@dataclass(frozen=True, slots=True)
class Choice:
    """The setting the server runs with and why (a typed outcome; `reason` is its sentence)."""

    setting: Setting
    state: CalibrationState
    reason: str
    pairs_per_second: float | None = None
    best_pairs_per_second: float | None = None


def plan_grid(
    *,
    budgets: Sequence[int],
    batches_in_flight: Sequence[int],
    fixed_budget: int | None,
    fixed_batches_in_flight: int | None,
    floor: int,
) -> Grid | None:
    """The grid left once explicit flags fix their axis; None when both are fixed. Budgets
    below `floor` (one longest sequence) are dropped: a batch always holds one sequence."""
    if fixed_budget is not None and fixed_batches_in_flight is not None:
        return None
    tokens = (fixed_budget,) if fixed_budget is not None else _at_least(budgets, floor)
    if not tokens:
        tokens = (max(floor, max(budgets, default=floor)),)
    depths = (
        (fixed_batches_in_flight,)
        if fixed_batches_in_flight is not None
        else tuple(batches_in_flight)
    )
    return Grid(budgets=tokens, batches_in_flight=depths)


def _at_least(budgets: Sequence[int], floor: int) -> tuple[int, ...]:
    return tuple(budget for budget in budgets if budget >= floor)


def choose_setting(curve: Sequence[CurvePoint], *, tolerance: float, fallback: Setting) -> Choice:
    """The largest setting (most tokens in flight, then the larger budget) whose measured pairs/s
    is within `tolerance` (a fraction) of the best measured; `fallback` when nothing was
    measured."""
    measured = [
        point
        for point in curve
        if point.outcome == "measured" and point.pairs_per_second is not None
    ]
    if not measured:
        return Choice(
            setting=fallback,
            state="nothing_measured",
            reason=(
                "no setting could be measured (none fitted in memory or in the time limit); "
                f"running at the configured {fallback.max_batch_tokens} tokens x "
                f"{fallback.batches_in_flight} in flight"
            ),
        )
    best = max(measured, key=lambda point: point.pairs_per_second or 0.0)
    best_rate = best.pairs_per_second or 0.0
    bar = (1 - tolerance) * best_rate
    good_enough = [point for point in measured if (point.pairs_per_second or 0.0) >= bar]
    chosen = max(good_enough, key=lambda point: _tokens_in_flight(point.setting))
    rate = chosen.pairs_per_second or 0.0
    if chosen is best:
        why = f"the best measured ({rate:.0f} pairs/s)"
    else:
        why = (
            f"the largest within {tolerance:.0%} of the best ({rate:.0f} against "
            f"{best_rate:.0f} pairs/s at {best.setting.max_batch_tokens} tokens x "
            f"{best.setting.batches_in_flight})"
        )
    return Choice(
        setting=chosen.setting,
        state="calibrated",
        reason=f"{chosen.setting.max_batch_tokens} tokens x "
        f"{chosen.setting.batches_in_flight} in flight: {why}",
        pairs_per_second=chosen.pairs_per_second,
        best_pairs_per_second=best_rate,
    )


def _tokens_in_flight(setting: Setting) -> tuple[int, int]:
    return setting.max_batch_tokens * setting.batches_in_flight, setting.max_batch_tokens


def design_pair_lengths(
    count: int, *, seed: int, mean_tokens: int = DESIGN_MEAN_TOKENS
) -> list[int]:
    """Pair lengths in [64, 512] drawn as bench/inference/workload.py draws them: a Beta(2.2, b)
    spread whose mean is `mean_tokens` (a test keeps the two the same)."""
    rng = random.Random(seed)
    fraction = (mean_tokens - MIN_PAIR_TOKENS) / (MAX_PAIR_TOKENS - MIN_PAIR_TOKENS)
    alpha = 2.2
    beta = alpha * (1.0 - fraction) / fraction
    span = MAX_PAIR_TOKENS - MIN_PAIR_TOKENS
    return [MIN_PAIR_TOKENS + round(span * rng.betavariate(alpha, beta)) for _ in range(count)]


def synthetic_input(*, task: str, lengths: Sequence[int], max_input_length: int) -> ModelInput:
    """Inputs of about the given token lengths: one common word is one token in the BERT,
    RoBERTa and XLM-R vocabularies, so n words make about n tokens (the trial counts the real
    ones); a pair spends 3-4 tokens on special tokens."""
    cap = max(1, max_input_length)
    if task == "rerank":
        texts = [" ".join(["the"] * max(1, min(cap, n) - QUERY_WORDS - 4)) for n in lengths]
        return PairsInput(query=" ".join(["the"] * QUERY_WORDS), texts=texts, truncate=True)
    texts = [" ".join(["the"] * max(1, min(cap, n) - 2)) for n in lengths]
    return TextsInput(texts=texts, truncate=True)


@dataclass(frozen=True, slots=True)
class MeasureLimits:
    """How long calibration may take, and the least work a trial does to count."""

    seconds: float
    min_batches: int = 4
    max_batch_requests: int = 512


def measure_curve(
    runner: ModelRunner,
    *,
    grid: Grid,
    fits: Callable[[Setting], bool],
    limits: MeasureLimits,
    clock: Callable[[], float],
    pool: Sequence[TokenizedSequence] | None = None,
) -> list[CurvePoint]:
    """Measure pairs/s at each setting of the grid, smallest first, inside `limits.seconds`.

    Each trial gets an equal share of the time still left; it runs one batch untimed (kernels
    for the shape), then launches batches `batches_in_flight` deep until its share is spent and
    at least `min_batches` were read back. A setting that does not `fit` is never tried; an
    out-of-memory error marks it and every setting at least as large on both axes unfit."""
    if pool is None:
        info = runner.info
        lengths = design_pair_lengths(POOL_SEQUENCES, seed=0)
        pool = runner.encode(
            synthetic_input(task=info.task, lengths=lengths, max_input_length=info.max_input_length)
        )
    settings = grid.settings()
    curve: list[CurvePoint] = []
    ooms: list[Setting] = []
    started = clock()
    for position, setting in enumerate(settings):
        if not fits(setting):
            curve.append(CurvePoint(setting, "unfit_memory"))
            continue
        if any(_covers(setting, failed) for failed in ooms):
            curve.append(CurvePoint(setting, "out_of_memory"))
            continue
        left = limits.seconds - (clock() - started)
        if left <= 0:
            curve.append(CurvePoint(setting, "out_of_time"))
            continue
        share = left / sum(1 for _ in settings[position:])
        batches = _batches(pool, setting.max_batch_tokens, limits.max_batch_requests)
        try:
            point = _trial(runner, setting, batches, share=share, limits=limits, clock=clock)
        except DeviceOutOfMemoryError as oom:
            log.warning(
                "calibration: %d tokens x %d in flight ran out of memory (%s); marked unfit",
                setting.max_batch_tokens,
                setting.batches_in_flight,
                oom.detail,
            )
            ooms.append(setting)
            curve.append(CurvePoint(setting, "out_of_memory"))
            continue
        log.info(
            "calibration: %d tokens x %d in flight: %.0f pairs/s (%d batches in %.2f s)",
            setting.max_batch_tokens,
            setting.batches_in_flight,
            point.pairs_per_second or 0.0,
            point.batches,
            point.seconds,
        )
        curve.append(point)
    return curve


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """What /info, the log and the metrics say about the calibration."""

    choice: Choice
    device_name: str
    curve: tuple[CurvePoint, ...] = ()
    seconds: float = 0.0
    time_limit_seconds: float = 0.0
    tolerance: float = 0.0

    @property
    def state(self) -> CalibrationState:
        return self.choice.state

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "reason": self.choice.reason,
            "device_name": self.device_name,
            "max_batch_tokens": self.choice.setting.max_batch_tokens,
            "batches_in_flight": self.choice.setting.batches_in_flight,
            "pairs_per_second": _rounded(self.choice.pairs_per_second),
            "seconds": round(self.seconds, 3),
            "time_limit_seconds": self.time_limit_seconds,
            "tolerance": self.tolerance,
            "curve": [point.as_json() for point in self.curve],
        }


def not_calibrated(
    *, setting: Setting, device_name: str, state: CalibrationState, reason: str
) -> CalibrationReport:
    """The report when no measurement runs (off, or both axes fixed by flags)."""
    return CalibrationReport(
        choice=Choice(setting=setting, state=state, reason=reason), device_name=device_name
    )


def calibrate(
    runner: ModelRunner,
    *,
    grid: Grid,
    fits: Callable[[Setting], bool],
    limits: MeasureLimits,
    tolerance: float,
    fallback: Setting,
    clock: Callable[[], float],
) -> CalibrationReport:
    """Measure the curve, choose from it, and log the choice (each point is logged as measured)."""
    started = clock()
    curve = measure_curve(runner, grid=grid, fits=fits, limits=limits, clock=clock)
    seconds = clock() - started
    choice = choose_setting(curve, tolerance=tolerance, fallback=fallback)
    skipped = [
        f"{point.setting.max_batch_tokens}x{point.setting.batches_in_flight} {point.outcome}"
        for point in curve
        if point.outcome != "measured"
    ]
    log.info(
        "calibration on %s took %.1f s (limit %.0f s)%s: %s",
        runner.info.device_name,
        seconds,
        limits.seconds,
        f", not measured: {', '.join(skipped)}" if skipped else "",
        choice.reason,
    )
    return CalibrationReport(
        choice=choice,
        device_name=runner.info.device_name,
        curve=tuple(curve),
        seconds=seconds,
        time_limit_seconds=limits.seconds,
        tolerance=tolerance,
    )


def _covers(setting: Setting, failed: Setting) -> bool:
    return (
        setting.max_batch_tokens >= failed.max_batch_tokens
        and setting.batches_in_flight >= failed.batches_in_flight
    )


def _batches(
    pool: Sequence[TokenizedSequence], budget: int, max_requests: int
) -> Callable[[], list[TokenizedSequence]]:
    """Endless batches cut from the pool in order (wrapping), each as large as the budget holds."""
    position = 0

    def next_batch() -> list[TokenizedSequence]:
        nonlocal position
        batch: list[TokenizedSequence] = []
        tokens = 0
        while len(batch) < min(max_requests, len(pool)):
            sequence = pool[position % len(pool)]
            if batch and tokens + sequence.num_tokens > budget:
                break
            batch.append(sequence)
            tokens += sequence.num_tokens
            position += 1
        return batch

    return next_batch


def _trial(
    runner: ModelRunner,
    setting: Setting,
    next_batch: Callable[[], list[TokenizedSequence]],
    *,
    share: float,
    limits: MeasureLimits,
    clock: Callable[[], float],
) -> CurvePoint:
    launched: deque[tuple[BatchHandle, int]] = deque()
    try:
        runner.finish_batch(runner.start_batch(next_batch()))  # untimed: warm the shape
        started = clock()
        pairs = batches = 0
        while True:
            spent = clock() - started
            more = spent < share or batches + len(launched) < limits.min_batches
            if more and len(launched) < setting.batches_in_flight:
                batch = next_batch()
                launched.append((runner.start_batch(batch), len(batch)))
                continue
            if not launched:
                break
            handle, size = launched.popleft()
            runner.finish_batch(handle)
            pairs += size
            batches += 1
        seconds = clock() - started
    finally:
        _drain(runner, launched)
    rate = pairs / seconds if seconds > 0 else None
    return CurvePoint(setting, "measured", rate, batches=batches, seconds=seconds)


def _drain(runner: ModelRunner, launched: deque[tuple[BatchHandle, int]]) -> None:
    """Read back what is still in flight after a failure, so its memory is released."""
    while launched:
        handle, _ = launched.popleft()
        try:
            runner.finish_batch(handle)
        except Exception:  # the trial already failed: this only frees memory
            log.debug("calibration: a batch in flight failed while draining", exc_info=True)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
