"""A de-duplicating work queue of resource keys, as controllers use it.

A key waits in the queue at most once; a key that is being worked on is never handed to a
second worker, and if it is added meanwhile it is handed out again once the first is done, so
the latest state always gets one more look. `add_after` schedules a later look (requeue, retry
with backoff, periodic resync); only the earliest schedule per key is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class QueueClosedError(Exception):
    """get() on a closed queue: the worker should stop."""


class WorkQueue(Generic[K]):
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ready: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def scheduled(self) -> int:
        return len(self._due)

    @property
    def processing(self) -> int:
        return len(self._processing)

    def add(self, key: K) -> None:
        if self._closed:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._ready.append(key)
            self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        due = self._clock() + delay
        if self._due.get(key, float("inf")) <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._wakeup.set()

    def forget(self, key: K) -> None:
        """Drop pending schedules of a key (its object is gone)."""
        self._due.pop(key, None)
        self._dirty.discard(key)

    def promote_due(self) -> float | None:
        """Move keys whose time has come to the ready line; seconds until the next, if any."""
        now = self._clock()
        while self._heap:
            due, _, key = self._heap[0]
            if self._due.get(key) != due:
                heapq.heappop(self._heap)  # superseded by an earlier schedule or forgotten
                continue
            if due > now:
                return due - now
            heapq.heappop(self._heap)
            del self._due[key]
            self.add(key)
        return None

    async def get(self) -> K:
        while True:
            if self._closed:
                raise QueueClosedError
            wait = self.promote_due()
            if self._ready:
                key = self._ready.popleft()
                self._queued.discard(key)
                self._processing.add(key)
                return key
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
