"""BatchEngine with a fake model: order, budgets, 429 at once, dropping pairs of clients that left,
OOM split-and-retry with a lowered budget, failures reported per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from kuberank_inference.engine.batching import BatchEngine, EngineSettings
from kuberank_inference.engine.contracts import PairsInput
from kuberank_inference.failures import (
    InferenceFailedError,
    InputTooLongError,
    NotReadyError,
    OverloadedError,
)
from kuberank_inference.faults import OomInjection
from kuberank_inference.metrics import InferenceMetrics
from tests.unit.inference.fakes import FakeRunner, ServableFakeRunner, fake_info, fake_score


def settings(**overrides: int) -> EngineSettings:
    values = {
        "max_batch_tokens": 64,
        "max_batch_requests": 8,
        "max_concurrent_pairs": 100,
        "tokenization_workers": 2,
    }
    values.update(overrides)
    return EngineSettings(**values)


def texts(count: int, words: int = 3, prefix: str = "t") -> list[str]:
    return [" ".join(f"{prefix}{i}w{j}" for j in range(words)) for i in range(count)]


def sample(metrics: InferenceMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def until(condition: Callable[[], bool], *, seconds: float = 10.0) -> None:
    """Wait for an observable condition of the engine, failing at the deadline."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.001)


async def refuses_new_work(engine: BatchEngine) -> bool:
    try:
        await engine.run(PairsInput("q", [], False))
    except NotReadyError:
        return True
    return False


@pytest.fixture
async def started() -> AsyncIterator[tuple[BatchEngine, FakeRunner, InferenceMetrics]]:
    runner = FakeRunner()
    metrics = InferenceMetrics()
    engine = BatchEngine(runner=runner, settings=settings(), metrics=metrics)
    engine.start()
    yield engine, runner, metrics
    runner.gate.set()
    await engine.stop()


async def test_outputs_come_back_in_request_order(
    started: tuple[BatchEngine, FakeRunner, InferenceMetrics],
) -> None:
    engine, _, metrics = started
    docs = texts(20)
    done = await engine.run(PairsInput("q", docs, truncate=False))
    assert done.outputs == [fake_score(t) for t in docs]
    assert done.num_tokens == 20 * 5
    assert sample(metrics, "kuberank_inference_pairs_total") == 20


async def test_batches_respect_the_token_budget_and_the_cap(
    started: tuple[BatchEngine, FakeRunner, InferenceMetrics],
) -> None:
    engine, runner, _ = started
    await asyncio.gather(
        *(engine.run(PairsInput("q", texts(7, prefix=f"r{r}"), False)) for r in range(6))
    )
    assert sum(len(b) for b in runner.batches) == 42
    for batch in runner.batches:
        assert len(batch) <= 8
        assert sum(len(t.split()) + 2 for t in batch) <= 64


async def test_concurrent_requests_share_batches(
    started: tuple[BatchEngine, FakeRunner, InferenceMetrics],
) -> None:
    engine, runner, metrics = started
    runner.gate.clear()  # hold the first batch so the others queue up behind it
    first = asyncio.create_task(engine.run(PairsInput("q", texts(1, prefix="a"), False)))
    await asyncio.to_thread(runner.reading_back.wait, 10)  # the worker waits on the first batch
    rest = [
        asyncio.create_task(engine.run(PairsInput("q", texts(2, prefix=p), False)))
        for p in ("b", "c", "d")
    ]
    # all six of their texts wait behind the held batch
    await until(lambda: metrics.registry.get_sample_value("kuberank_inference_queue_depth") == 6)
    runner.gate.set()
    await asyncio.gather(first, *rest)
    mixed = [b for b in runner.batches if len({t[0] for t in b}) > 1]
    assert mixed, runner.batches


async def test_work_waiting_and_running_is_exported_in_tokens(
    started: tuple[BatchEngine, FakeRunner, InferenceMetrics],
) -> None:
    engine, runner, metrics = started
    runner.gate.clear()  # hold the first batch (one text of 5 tokens) on the device
    first = asyncio.create_task(engine.run(PairsInput("q", texts(1, prefix="a"), False)))
    await asyncio.to_thread(runner.reading_back.wait, 10)
    assert sample(metrics, "kuberank_inference_running_tokens") == 5
    rest = [
        asyncio.create_task(engine.run(PairsInput("q", texts(2, prefix=p), False)))
        for p in ("b", "c", "d")
    ]
    await until(lambda: sample(metrics, "kuberank_inference_queue_tokens") == 6 * 5)
    assert sample(metrics, "kuberank_inference_queue_depth") == 6
    runner.gate.set()
    await asyncio.gather(first, *rest)
    assert sample(metrics, "kuberank_inference_queue_tokens") == 0
    assert sample(metrics, "kuberank_inference_running_tokens") == 0


async def test_over_the_pair_limit_is_rejected_at_once() -> None:
    runner = FakeRunner()
    runner.gate.clear()
    metrics = InferenceMetrics()
    engine = BatchEngine(runner=runner, settings=settings(max_concurrent_pairs=10), metrics=metrics)
    engine.start()
    try:
        held = asyncio.create_task(engine.run(PairsInput("q", texts(8), False)))
        await asyncio.to_thread(runner.started.wait, 10)
        assert engine.pairs_in_flight == 8
        with pytest.raises(OverloadedError, match="max-concurrent-pairs=10"):
            await asyncio.wait_for(engine.run(PairsInput("q", texts(3), False)), timeout=1)
        # what fits is still admitted
        small = asyncio.create_task(engine.run(PairsInput("q", texts(2, prefix="s"), False)))
        runner.gate.set()
        assert len((await held).outputs) == 8
        assert len((await small).outputs) == 2
        assert engine.pairs_in_flight == 0
        assert sample(metrics, "kuberank_inference_pairs_in_flight") == 0
    finally:
        runner.gate.set()
        await engine.stop()


async def test_pairs_of_a_client_that_left_are_dropped(
    started: tuple[BatchEngine, FakeRunner, InferenceMetrics],
) -> None:
    engine, runner, metrics = started
    runner.gate.clear()
    first = asyncio.create_task(engine.run(PairsInput("q", texts(1, prefix="a"), False)))
    await asyncio.to_thread(runner.reading_back.wait, 10)  # the worker waits on batch 1
    leaving = asyncio.create_task(engine.run(PairsInput("q", texts(30, prefix="z"), False)))
    await until(lambda: sample(metrics, "kuberank_inference_queue_depth") > 0)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    runner.gate.set()
    await first
    await engine.run(PairsInput("q", texts(1, prefix="b"), False))
    ran = [t for batch in runner.batches for t in batch]
    dropped = sample(metrics, "kuberank_inference_dropped_pairs_total")
    assert dropped > 0
    assert sum(t.startswith("z") for t in ran) == 30 - dropped
    assert engine.pairs_in_flight == 0


async def test_oom_splits_the_batch_and_lowers_the_budget() -> None:
    runner = FakeRunner(info=fake_info(max_input_length=16), oom_above_tokens=20)
    metrics = InferenceMetrics()
    engine = BatchEngine(runner=runner, settings=settings(), metrics=metrics)
    engine.start()
    try:
        docs = texts(12)
        done = await engine.run(PairsInput("q", docs, False))
        assert done.outputs == [fake_score(t) for t in docs]
        assert sample(metrics, "kuberank_cuda_oom_total") >= 1
        assert sample(metrics, "kuberank_inference_token_budget") < 64
        assert all(sum(len(t.split()) + 2 for t in b) <= 20 for b in runner.batches)
    finally:
        await engine.stop()


async def test_injected_oom_loses_no_request() -> None:
    runner = OomInjection(ServableFakeRunner())
    metrics = InferenceMetrics()
    engine = BatchEngine(runner=runner, settings=settings(), metrics=metrics)
    engine.start()
    try:
        runner.inject_oom(1)
        docs = texts(6)
        done = await engine.run(PairsInput("q", docs, False))
        assert done.outputs == [fake_score(t) for t in docs]
        assert sample(metrics, "kuberank_cuda_oom_total") == 1
    finally:
        await engine.stop()


async def test_oom_on_a_single_sequence_fails_that_request_only() -> None:
    runner = FakeRunner(oom_above_tokens=6)
    engine = BatchEngine(runner=runner, settings=settings(), metrics=InferenceMetrics())
    engine.start()
    try:
        with pytest.raises(InferenceFailedError, match="single sequence of 7 tokens"):
            await engine.run(PairsInput("q", ["a b c d e"], False))
        done = await engine.run(PairsInput("q", ["a b"], False))
        assert done.outputs == [fake_score("a b")]
    finally:
        await engine.stop()


async def test_a_failing_model_fails_the_request_with_the_reason() -> None:
    runner = FakeRunner(fail_with=RuntimeError("kernel exploded"))
    engine = BatchEngine(runner=runner, settings=settings(), metrics=InferenceMetrics())
    engine.start()
    try:
        with pytest.raises(InferenceFailedError, match="kernel exploded"):
            await engine.run(PairsInput("q", texts(2), False))
        assert engine.pairs_in_flight == 0
    finally:
        await engine.stop()


async def test_too_long_input_is_reported_before_queueing(
    started: tuple[BatchEngine, FakeRunner, InferenceMetrics],
) -> None:
    engine, runner, _ = started
    long_text = " ".join(["w"] * 100)
    with pytest.raises(InputTooLongError, match="at most 64"):
        await engine.run(PairsInput("q", ["ok", long_text], truncate=False))
    assert runner.batches == []
    done = await engine.run(PairsInput("q", ["ok", long_text], truncate=True))
    assert len(done.outputs) == 2


async def test_stop_fails_waiting_requests_and_refuses_new_ones() -> None:
    runner = FakeRunner()
    runner.gate.clear()
    metrics = InferenceMetrics()
    engine = BatchEngine(runner=runner, settings=settings(), metrics=metrics)
    engine.start()
    running = asyncio.create_task(engine.run(PairsInput("q", texts(2), False)))
    await asyncio.to_thread(runner.reading_back.wait, 10)  # the worker waits on that batch
    launched = asyncio.create_task(engine.run(PairsInput("q", texts(2, prefix="l"), False)))
    # both wait behind the batch on the device
    await until(lambda: metrics.registry.get_sample_value("kuberank_inference_queue_depth") == 2)
    waiting = asyncio.create_task(engine.run(PairsInput("q", texts(2, prefix="w"), False)))
    await until(lambda: metrics.registry.get_sample_value("kuberank_inference_queue_depth") == 4)
    stopping = asyncio.create_task(engine.stop())
    deadline = time.monotonic() + 10
    while not await refuses_new_work(engine):  # stop() has begun once new work is refused
        assert time.monotonic() < deadline, "stop() never began"
    runner.gate.set()
    await stopping
    assert len((await running).outputs) == 2  # the batch on the device finished
    results = await asyncio.gather(launched, waiting, return_exceptions=True)
    assert all(isinstance(r, NotReadyError) for r in results), results
    with pytest.raises(NotReadyError):
        await engine.run(PairsInput("q", texts(1), False))


async def test_padded_models_record_their_padding() -> None:
    runner = FakeRunner(info=fake_info(padding_free=False))
    metrics = InferenceMetrics()
    engine = BatchEngine(runner=runner, settings=settings(), metrics=metrics)
    engine.start()
    try:
        await engine.run(PairsInput("q", ["a b c d e", "a b c d e f g"], False))
        assert sample(metrics, "kuberank_inference_padding_ratio_sum") > 0
    finally:
        await engine.stop()
