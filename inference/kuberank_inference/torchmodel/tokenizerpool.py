"""Tokenization in processes of its own: `ProcessTokenizers` runs the model's tokenizer in a pool of
spawned worker processes, so that none of its Python (turning the Rust tokenizer's output into
arrays, about 40 µs a pair) holds the server's GIL, which the event loop and the batch thread's
kernel launches need (measured on an H200 with the base shape: the GIL was held 59 % of the time
at 5,575 pairs/s, 44 % of that by tokenizer threads).

A request crosses as its texts (split over idle workers); its sequences come back as three flat
arrays (`Packed`) and are unpacked into views. A client that leaves is seen by the worker between
chunks through one byte of shared memory per request in flight (its slot). A worker that dies
fails the requests it held and the pool is started again.

This module does not import torch: the workers import only the tokenizer.
"""

from __future__ import annotations

import functools
import itertools
import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

from kuberank_inference.engine.contracts import ModelInput, TokenizedSequence
from kuberank_inference.failures import (
    InferenceFailedError,
    InputTooLongError,
    RequestAbandonedError,
)
from kuberank_inference.torchmodel.tokenizing import (
    Encoded,
    Packed,
    SequenceTokenizer,
    TokenizerSpec,
    pack,
    unpack,
)

log = logging.getLogger(__name__)

SLOTS = 65536  # requests in tokenization at once that a leaving client can stop mid-way
MIN_PART = 8  # texts: a smaller request is never split over workers
_START_SECONDS = 120.0


@dataclass(slots=True)
class _Part:
    """A slice of a request's texts on one worker; `start` is its first text's index."""

    start: int
    slot: int
    inner: Future[Packed]


@dataclass(slots=True)
class ProcessTicket:
    future: Future[list[TokenizedSequence]]
    parts: list[_Part]
    _pool: ProcessTokenizers

    def abandon(self) -> None:
        for part in self.parts:
            self._pool.abandon(part.slot)
            part.inner.cancel()
        self.future.cancel()


class _Gather:
    """The parts' results, joined in order into the request's future once all are in; the
    error of the earliest part that failed, if any did (as one worker would have raised it)."""

    def __init__(self, outer: Future[list[TokenizedSequence]], count: int) -> None:
        self._outer = outer
        self._results: list[list[Encoded] | BaseException | None] = [None] * count
        self._remaining = count
        self._lock = threading.Lock()

    def put(self, index: int, result: list[Encoded] | BaseException) -> None:
        with self._lock:
            self._results[index] = result
            self._remaining -= 1
            if self._remaining:
                return
        if not self._outer.set_running_or_notify_cancel():
            return  # the client left
        joined: list[TokenizedSequence] = []
        for part in self._results:
            if isinstance(part, BaseException):
                self._outer.set_exception(part)
                return
            joined.extend(part or [])
        self._outer.set_result(joined)


class ProcessTokenizers:
    """`workers` spawned processes, each with its own copy of the tokenizer; every worker is
    running, its tokenizer built, before the constructor returns.

    A request goes to one worker when the others are busy; when some are idle it is split into
    slices of at least MIN_PART texts over them, so that one request alone is tokenized on as
    many CPUs as it was on the server's threads (which shared the Rust tokenizer's thread pool)."""

    def __init__(self, spec: TokenizerSpec, *, workers: int, threads_per_worker: int) -> None:
        self._spec = spec
        self._workers = workers
        self._threads = threads_per_worker
        self._context = multiprocessing.get_context("spawn")
        self._flags: Any = self._context.RawArray("b", SLOTS)
        self._lock = threading.Lock()
        self._free: deque[int] = deque(range(SLOTS))
        self._running = 0  # parts submitted and not yet finished
        self._restarting = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # The pool spawns a worker on a submit only while none is idle, so start-up tasks that
        # return at once leave most workers to be spawned later, by requests, each paying its
        # import on the request path (seen on an H200: half the workers still importing seconds
        # after start-up). Each start-up task waits at a barrier until every worker holds one.
        barrier = self._context.Barrier(self._workers)
        pool = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self._spec, self._flags, self._threads, barrier),
        )
        for ready in [pool.submit(_ready) for _ in range(self._workers)]:
            ready.result(timeout=_START_SECONDS)
        return pool

    def submit(self, request: ModelInput) -> ProcessTicket:
        bounds = self._split(request.size)
        outer: Future[list[TokenizedSequence]] = Future()
        gather = _Gather(outer, len(bounds))
        parts: list[_Part] = []
        for index, (start, stop) in enumerate(bounds):
            piece = (
                request if len(bounds) == 1 else replace(request, texts=request.texts[start:stop])
            )
            slot = self._take()
            pool, inner = self._submit(piece, slot)
            inner.add_done_callback(
                functools.partial(
                    self._finish, gather=gather, index=index, start=start, slot=slot, pool=pool
                )
            )
            parts.append(_Part(start, slot, inner))
        return ProcessTicket(outer, parts, self)

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (for tests and diagnostics)."""
        return [pid for pid, process in self._pool._processes.items() if process.is_alive()]

    def abandon(self, slot: int) -> None:
        if slot >= 0:
            self._flags[slot] = 1

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _split(self, size: int) -> list[tuple[int, int]]:
        """[start, stop) of each part: one per idle worker, each of at least MIN_PART texts."""
        with self._lock:
            idle = self._workers - self._running
        count = max(1, min(idle, size // MIN_PART))
        edges = [size * i // count for i in range(count + 1)]
        return list(itertools.pairwise(edges))

    def _submit(self, piece: ModelInput, slot: int) -> tuple[ProcessPoolExecutor, Future[Packed]]:
        with self._lock:
            self._running += 1
        pool = self._pool
        try:
            return pool, pool.submit(_encode, piece, slot)
        except BrokenProcessPool:  # a worker died since the last request: start them again
            self._restart(pool)
            pool = self._pool
            return pool, pool.submit(_encode, piece, slot)

    def _take(self) -> int:
        """A free slot, cleared; -1 when all are taken (that request cannot stop mid-way)."""
        with self._lock:
            slot = self._free.popleft() if self._free else -1
        if slot >= 0:
            self._flags[slot] = 0
        return slot

    def _finish(
        self,
        done: Future[Packed],
        *,
        gather: _Gather,
        index: int,
        start: int,
        slot: int,
        pool: ProcessPoolExecutor,
    ) -> None:
        """In the pool's thread: one part's arrays unpacked, or its error, to the gathering."""
        with self._lock:
            self._running -= 1
            if slot >= 0:
                self._free.append(slot)
        if done.cancelled():
            gather.put(index, RequestAbandonedError("the client left before its turn"))
            return
        error = done.exception()
        if isinstance(error, BrokenProcessPool):
            log.error("a tokenizer process died; starting the tokenizer processes again")
            self._restart(pool)
            error = InferenceFailedError(
                "inference failed: a tokenizer process died while it tokenized this request"
            )
        if isinstance(error, InputTooLongError) and start and error.index >= 0:
            error = error.shifted(start)  # the index in the whole request, not in the slice
        gather.put(index, error if error is not None else unpack(done.result()))

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        """Replace a broken pool, once however many requests saw it broken."""
        with self._restarting:
            if self._pool is not broken:
                return
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()


# --- the worker --------------------------------------------------------------------------------

_tokenizer: SequenceTokenizer | None = None
_flags: Any = None
_barrier: Any = None


class _Left:
    """A request's slot as the `Abandoned` the tokenizer checks between chunks."""

    def __init__(self, slot: int) -> None:
        self._slot = slot

    def is_set(self) -> bool:
        return bool(_flags[self._slot])


def _start_worker(spec: TokenizerSpec, flags: Any, threads: int, barrier: Any) -> None:
    global _tokenizer, _flags, _barrier
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when its workers stop
    # the Rust tokenizer's own thread pool, per worker (read when it first parallelizes)
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, threads)))
    _tokenizer = spec.build()
    _flags = flags
    _barrier = barrier


def _ready() -> int:
    """A start-up task: returns once every worker of the pool has started and holds one."""
    _barrier.wait(timeout=_START_SECONDS)
    return os.getpid()


def _encode(request: ModelInput, slot: int) -> Packed:
    assert _tokenizer is not None, "the worker was not started"
    abandoned = _Left(slot) if slot >= 0 else None
    return pack(_tokenizer.encode(request, abandoned=abandoned))
