"""Tokenization on threads of the server process: the runner's own `encode`, on a thread pool.

The Rust tokenizer releases the GIL while it encodes, but turning its output into arrays is
Python and holds it; `torchmodel.tokenizerpool` moves all of that into processes of their own.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from kuberank_inference.engine.contracts import Abandoned, ModelInput, TokenizedSequence

Encode = Callable[..., list[TokenizedSequence]]  # encode(request, *, abandoned=...)


@dataclass(slots=True)
class ThreadTicket:
    future: Future[list[TokenizedSequence]]
    left: threading.Event = field(default_factory=threading.Event)

    def abandon(self) -> None:
        self.left.set()
        self.future.cancel()


class ThreadTokenizers:
    """`encode(request, abandoned=event)` on `workers` threads named kuberank-tokenize."""

    def __init__(self, encode: Encode, *, workers: int) -> None:
        self._encode = encode
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kuberank-tokenize")

    def submit(self, request: ModelInput) -> ThreadTicket:
        left = threading.Event()
        abandoned: Abandoned = left
        future = self._pool.submit(functools.partial(self._encode, request, abandoned=abandoned))
        return ThreadTicket(future, left)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
