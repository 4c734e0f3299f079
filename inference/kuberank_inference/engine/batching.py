"""BatchEngine: admits requests, tokenizes them off the event loop (on the `Tokenizers` it is
given, threads of its own by default), queues their sequences and runs them in batches on one
worker thread, two batches deep (the next is collated, copied and launched while the device still
runs the previous one).

It knows neither HTTP nor torch: it talks to a `ModelRunner` and reports to `InferenceMetrics`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kuberank_inference.engine.budget import TokenBudget
from kuberank_inference.engine.contracts import (
    BatchHandle,
    ModelInput,
    ModelRunner,
    Output,
    TokenizationTicket,
    TokenizedSequence,
    Tokenizers,
)
from kuberank_inference.engine.planning import BatchPlanner, PlannedItem, padding_ratio
from kuberank_inference.engine.tokenizers import ThreadTokenizers
from kuberank_inference.failures import (
    DeviceOutOfMemoryError,
    InferenceError,
    InferenceFailedError,
    NotReadyError,
    OverloadedError,
)
from kuberank_inference.metrics import InferenceMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """What the engine runs with, taken once from the server's settings; `max_batch_tokens` is
    the token budget's ceiling (the configured one, capped by device memory at start-up)."""

    max_batch_tokens: int
    max_batch_requests: int
    max_concurrent_pairs: int
    tokenization_workers: int
    oom_recovery_seconds: float = 60.0
    starvation_seconds: float = 1.0
    batches_in_flight: int = 2


@dataclass(frozen=True, slots=True)
class Completed:
    """The outputs of one request, in input order, and the tokens it took."""

    outputs: list[Output]
    num_tokens: int


@dataclass(slots=True)
class _Job:
    job_id: int
    sequences: list[TokenizedSequence]
    future: asyncio.Future[list[Output]]
    enqueued_at: float
    outputs: list[Output | None] = field(default_factory=list)
    remaining: int = 0
    started: bool = False


@dataclass(slots=True)
class _Launched:
    items: list[PlannedItem]
    sequences: list[TokenizedSequence]
    handle: BatchHandle
    started_at: float


def _tokens(items: Sequence[PlannedItem]) -> int:
    return sum(item.num_tokens for item in items)


class BatchEngine:
    def __init__(
        self,
        *,
        runner: ModelRunner,
        settings: EngineSettings,
        metrics: InferenceMetrics,
        clock: Callable[[], float] = time.monotonic,
        tokenizers: Tokenizers | None = None,
    ) -> None:
        """`tokenizers`: where requests are tokenized; by default
        `settings.tokenization_workers` threads (started on the first request) run the runner's
        own `encode`."""
        info = runner.info
        self._runner = runner
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._budget = TokenBudget(
            ceiling=max(settings.max_batch_tokens, info.max_input_length),
            floor=info.max_input_length,
            recovery_seconds=settings.oom_recovery_seconds,
        )
        self._planner = BatchPlanner(
            max_batch_size=settings.max_batch_requests,
            padded=not info.padding_free,
            starvation_seconds=settings.starvation_seconds,
        )
        self._cond = threading.Condition()
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)
        self._in_flight_pairs = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: threading.Thread | None = None
        self._tokenizers: Tokenizers = tokenizers or ThreadTokenizers(
            runner.encode, workers=settings.tokenization_workers
        )
        self.last_success: float | None = None
        metrics.token_budget.set(self._budget.ceiling)

    @property
    def pairs_in_flight(self) -> int:
        return self._in_flight_pairs

    @property
    def token_budget_ceiling(self) -> int:
        return self._budget.ceiling

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._worker = threading.Thread(target=self._work, name="kuberank-batcher", daemon=True)
        self._worker.start()

    async def stop(self) -> None:
        """Stop the worker; requests still waiting fail with NotReadyError."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join)
        self._tokenizers.shutdown()
        for job in list(self._jobs.values()):
            if not job.future.done():
                job.future.set_exception(NotReadyError("the server is shutting down"))
        self._jobs.clear()

    async def run(self, request: ModelInput) -> Completed:
        """Score or embed every sequence of one request; OverloadedError at once when full."""
        size = request.size
        if self._stopping or self._loop is None:
            raise NotReadyError("the server is not accepting work (starting or shutting down)")
        limit = self._settings.max_concurrent_pairs
        if self._in_flight_pairs + size > limit:
            raise OverloadedError(
                f"model is overloaded: {self._in_flight_pairs} sequences in flight and this "
                f"request adds {size}, over --max-concurrent-pairs={limit}; retry later or "
                "add replicas"
            )
        self._in_flight_pairs += size
        self._metrics.pairs_in_flight.set(self._in_flight_pairs)
        job: _Job | None = None
        # abandoned when the client leaves: a tokenization not yet started never starts, one
        # under way stops at its next chunk
        ticket: TokenizationTicket | None = None
        try:
            started = self._clock()
            ticket = self._tokenizers.submit(request)
            sequences = await asyncio.wrap_future(ticket.future)
            self._metrics.tokenization_duration.observe(self._clock() - started)
            job = self._enqueue(sequences)
            outputs = await job.future
            return Completed(outputs, sum(seq.num_tokens for seq in sequences))
        except asyncio.CancelledError:
            if ticket is not None:
                ticket.abandon()
            if job is not None:
                self._abandon(job)
            raise
        finally:
            self._in_flight_pairs -= size
            self._metrics.pairs_in_flight.set(self._in_flight_pairs)

    def _enqueue(self, sequences: list[TokenizedSequence]) -> _Job:
        assert self._loop is not None
        job = _Job(
            job_id=next(self._ids),
            sequences=sequences,
            future=self._loop.create_future(),
            enqueued_at=self._clock(),
            outputs=[None] * len(sequences),
            remaining=len(sequences),
        )
        if not sequences:
            job.future.set_result([])
            return job
        items = [
            PlannedItem(job.job_id, index, sequence.num_tokens)
            for index, sequence in enumerate(sequences)
        ]
        with self._cond:
            self._jobs[job.job_id] = job
            self._planner.add(job.job_id, items, now=job.enqueued_at)
            self._report_queue()
            self._cond.notify()
        return job

    def _report_queue(self) -> None:
        """Export what waits, in sequences and in tokens (called under the lock)."""
        self._metrics.queue_depth.set(self._planner.pending_items)
        self._metrics.queue_tokens.set(self._planner.pending_tokens)

    def _abandon(self, job: _Job) -> None:
        """The client left: drop its waiting sequences (those already running finish unseen)."""
        with self._cond:
            dropped = self._planner.drop(job.job_id)
            self._jobs.pop(job.job_id, None)
            self._report_queue()
        if dropped:
            self._metrics.dropped_pairs.inc(dropped)
            log.debug("client left: dropped %d waiting sequences of job %d", dropped, job.job_id)

    # --- the worker thread -------------------------------------------------------------------

    def _work(self) -> None:
        launched: deque[_Launched] = deque()
        while True:
            with self._cond:
                while not self._stopping and not launched and not self._planner.pending_items:
                    self._cond.wait()
                if self._stopping:
                    break
                items: list[PlannedItem] = []
                sequences: list[TokenizedSequence] = []
                if self._planner.pending_items and len(launched) < self._settings.batches_in_flight:
                    now = self._clock()
                    budget = self._budget.current(now=now)
                    self._metrics.token_budget.set(budget)
                    items = self._planner.next_batch(token_budget=budget, now=now)
                    self._report_queue()
                    sequences = self._sequences_of(items, now=now)
            if items:
                self._launch(items, sequences, launched)
            if launched and (not items or len(launched) >= self._settings.batches_in_flight):
                self._complete(launched.popleft())
        for batch in launched:
            self._metrics.running_tokens.dec(_tokens(batch.items))
            self._fail(batch.items, NotReadyError("the server is shutting down"))

    def _sequences_of(self, items: list[PlannedItem], *, now: float) -> list[TokenizedSequence]:
        """Look up the sequences of planned items (called under the lock)."""
        sequences = []
        for item in items:
            job = self._jobs[item.job_id]
            if not job.started:
                job.started = True
                self._metrics.queue_duration.observe(now - job.enqueued_at)
            sequences.append(job.sequences[item.index])
        return sequences

    def _launch(
        self,
        items: list[PlannedItem],
        sequences: list[TokenizedSequence],
        launched: deque[_Launched],
    ) -> None:
        started = self._clock()
        try:
            handle = self._runner.start_batch(sequences)
        except DeviceOutOfMemoryError as oom:
            self._record_oom(oom)
            # free what the batches still in flight hold before retrying in halves
            while launched:
                self._complete(launched.popleft())
            self._run_split(items, sequences)
            return
        except Exception as error:
            log.exception("batch of %d sequences failed to start", len(items))
            self._fail(items, InferenceFailedError(f"inference failed: {error}"))
            return
        self._observe_batch(items)
        launched.append(_Launched(items, sequences, handle, started))

    def _run_split(self, items: list[PlannedItem], sequences: list[TokenizedSequence]) -> None:
        """Retry an out-of-memory batch in halves, synchronously, until each half fits."""
        if len(items) == 1:
            tokens = items[0].num_tokens
            self._fail(
                items,
                InferenceFailedError(
                    f"inference failed: device out of memory even for a single sequence of "
                    f"{tokens} tokens; lower --max-input-length or the memory others use"
                ),
            )
            return
        half = len(items) // 2
        for part_items, part_sequences in (
            (items[:half], sequences[:half]),
            (items[half:], sequences[half:]),
        ):
            started = self._clock()
            try:
                handle = self._runner.start_batch(part_sequences)
                self._observe_batch(part_items)
                outputs = self._finish(handle, part_items)
            except DeviceOutOfMemoryError as oom:
                self._record_oom(oom)
                self._run_split(part_items, part_sequences)
                continue
            except Exception as error:
                log.exception("batch of %d sequences failed", len(part_items))
                self._fail(part_items, InferenceFailedError(f"inference failed: {error}"))
                continue
            self._succeeded(part_items, outputs, started)

    def _complete(self, batch: _Launched) -> None:
        try:
            outputs = self._finish(batch.handle, batch.items)
        except DeviceOutOfMemoryError as oom:
            self._record_oom(oom)
            self._run_split(batch.items, batch.sequences)
            return
        except Exception as error:
            log.exception("batch of %d sequences failed", len(batch.items))
            self._fail(batch.items, InferenceFailedError(f"inference failed: {error}"))
            return
        self._succeeded(batch.items, outputs, batch.started_at)

    def _finish(self, handle: BatchHandle, items: list[PlannedItem]) -> list[Output]:
        """Read a launched batch back; its tokens stop counting as running, whatever happens."""
        try:
            return self._runner.finish_batch(handle)
        finally:
            self._metrics.running_tokens.dec(_tokens(items))

    def _record_oom(self, oom: DeviceOutOfMemoryError) -> None:
        self._metrics.cuda_oom.inc()
        with self._cond:
            budget = self._budget.record_oom(now=self._clock(), batch_tokens=oom.tokens)
        self._metrics.token_budget.set(budget)
        log.warning("%s; token budget lowered to %d", oom, budget)

    def _observe_batch(self, items: list[PlannedItem]) -> None:
        lengths = [item.num_tokens for item in items]
        self._metrics.running_tokens.inc(sum(lengths))
        self._metrics.batch_size.observe(len(items))
        self._metrics.batch_tokens.observe(sum(lengths))
        self._metrics.padding_ratio.observe(padding_ratio(lengths, padded=self._planner.padded))

    def _succeeded(self, items: list[PlannedItem], outputs: list[Output], started: float) -> None:
        now = self._clock()
        self._metrics.inference_duration.observe(now - started)
        self._metrics.pairs.inc(len(items))
        self.last_success = now
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, items, outputs, None)

    def _fail(self, items: list[PlannedItem], error: InferenceError) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, items, None, error)

    def _deliver(
        self,
        items: Sequence[PlannedItem],
        outputs: Sequence[Output] | None,
        error: InferenceError | None,
    ) -> None:
        """On the event loop: hand outputs to their jobs and wake the finished ones."""
        for position, item in enumerate(items):
            job = self._jobs.get(item.job_id)
            if job is None or job.future.done():
                continue
            if error is not None:
                self._forget(job)
                job.future.set_exception(error)
                continue
            assert outputs is not None
            job.outputs[item.index] = outputs[position]
            job.remaining -= 1
            if job.remaining == 0:
                self._forget(job)
                job.future.set_result([out for out in job.outputs if out is not None])

    def _forget(self, job: _Job) -> None:
        with self._cond:
            self._planner.drop(job.job_id)
            self._jobs.pop(job.job_id, None)
            self._report_queue()
