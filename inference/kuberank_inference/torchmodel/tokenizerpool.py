"""Tokenization in processes of its own: `ProcessTokenizers` runs the model's tokenizer in a pool of
spawned worker processes, so that none of its Python (turning the Rust tokenizer's output into
arrays, about 40 µs a pair) holds the server's GIL, which the event loop and the batch thread's
kernel launches need (measured on an H200 with the base shape: the GIL was held 59 % of the time
at 5,575 pairs/s, 44 % of that by tokenizer threads).

A request crosses as its texts; its sequences come back as three flat arrays (`Packed`) and are
unpacked into views. A client that leaves is seen by the worker between chunks through one byte
of shared memory per request in flight (its slot). A worker that dies fails the requests it held
and the pool is started again.

This module does not import torch: the workers import only the tokenizer.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from kuberank_inference.engine.contracts import ModelInput, TokenizedSequence
from kuberank_inference.failures import InferenceFailedError
from kuberank_inference.torchmodel.tokenizing import (
    Packed,
    SequenceTokenizer,
    TokenizerSpec,
    pack,
    unpack,
)

log = logging.getLogger(__name__)

SLOTS = 65536  # requests in tokenization at once that a leaving client can stop mid-way
_START_SECONDS = 120.0


@dataclass(slots=True)
class ProcessTicket:
    future: Future[list[TokenizedSequence]]
    _inner: Future[Packed]
    _slot: int
    _pool: ProcessTokenizers

    def abandon(self) -> None:
        self._pool.abandon(self._slot)
        self._inner.cancel()
        self.future.cancel()


class ProcessTokenizers:
    """`workers` spawned processes, each with its own copy of the tokenizer; every worker is
    started (and has tokenized once) before the constructor returns."""

    def __init__(self, spec: TokenizerSpec, *, workers: int, threads_per_worker: int) -> None:
        self._spec = spec
        self._workers = workers
        self._threads = threads_per_worker
        self._context = multiprocessing.get_context("spawn")
        self._flags: Any = self._context.RawArray("b", SLOTS)
        self._lock = threading.Lock()
        self._free: deque[int] = deque(range(SLOTS))
        self._restarting = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self._spec, self._flags, self._threads),
        )
        # one task per worker at once: the pool spawns them all now, not on the first requests
        for ready in [pool.submit(_ready) for _ in range(self._workers)]:
            ready.result(timeout=_START_SECONDS)
        return pool

    def submit(self, request: ModelInput) -> ProcessTicket:
        slot = self._take()
        outer: Future[list[TokenizedSequence]] = Future()
        pool = self._pool
        try:
            inner = pool.submit(_encode, request, slot)
        except BrokenProcessPool:  # a worker died since the last request: start them again
            self._restart(pool)
            pool = self._pool
            inner = pool.submit(_encode, request, slot)
        inner.add_done_callback(lambda done: self._finish(done, outer, slot, pool))
        return ProcessTicket(outer, inner, slot, self)

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (for tests and diagnostics)."""
        return [pid for pid, process in self._pool._processes.items() if process.is_alive()]

    def abandon(self, slot: int) -> None:
        if slot >= 0:
            self._flags[slot] = 1

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _take(self) -> int:
        """A free slot, cleared; -1 when all are taken (that request cannot stop mid-way)."""
        with self._lock:
            slot = self._free.popleft() if self._free else -1
        if slot >= 0:
            self._flags[slot] = 0
        return slot

    def _release(self, slot: int) -> None:
        if slot >= 0:
            with self._lock:
                self._free.append(slot)

    def _finish(
        self,
        done: Future[Packed],
        outer: Future[list[TokenizedSequence]],
        slot: int,
        pool: ProcessPoolExecutor,
    ) -> None:
        """In the pool's thread: unpack the worker's arrays into the request's future."""
        self._release(slot)
        if done.cancelled() or not outer.set_running_or_notify_cancel():
            outer.cancel()
            return
        error = done.exception()
        if isinstance(error, BrokenProcessPool):
            log.error("a tokenizer process died; starting the tokenizer processes again")
            self._restart(pool)
            error = InferenceFailedError(
                "inference failed: a tokenizer process died while it tokenized this request"
            )
        if error is not None:
            outer.set_exception(error)
            return
        outer.set_result(list(unpack(done.result())))

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


class _Left:
    """A request's slot as the `Abandoned` the tokenizer checks between chunks."""

    def __init__(self, slot: int) -> None:
        self._slot = slot

    def is_set(self) -> bool:
        return bool(_flags[self._slot])


def _start_worker(spec: TokenizerSpec, flags: Any, threads: int) -> None:
    global _tokenizer, _flags
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when its workers stop
    # the Rust tokenizer's own thread pool, per worker (read when it first parallelizes)
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, threads)))
    _tokenizer = spec.build()
    _flags = flags


def _ready() -> int:
    return os.getpid()


def _encode(request: ModelInput, slot: int) -> Packed:
    assert _tokenizer is not None, "the worker was not started"
    abandoned = _Left(slot) if slot >= 0 else None
    return pack(_tokenizer.encode(request, abandoned=abandoned))
