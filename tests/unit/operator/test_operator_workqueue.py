"""The de-duplicating work queue."""

from __future__ import annotations

import asyncio

import pytest

from kuberank_operator.reconcile.workqueue import QueueClosedError, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_keys_are_deduplicated_and_fifo() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "c", "b"):
        q.add(key)
    assert len(q) == 3
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]


async def test_a_key_in_work_is_handed_out_again_after_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert await q.get() == "a"
    q.add("a")  # changed while a worker holds it
    assert len(q) == 0, "never to two workers at once"
    q.done("a")
    assert await q.get() == "a"
    q.done("a")
    assert len(q) == 0


async def test_add_after_keeps_the_earliest_schedule() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("a", 30)
    q.add_after("a", 10)
    q.add_after("a", 60)
    assert q.scheduled == 1
    assert q.promote_due() == pytest.approx(10)
    clock.now += 10
    assert q.promote_due() is None
    assert await q.get() == "a"


async def test_forget_drops_schedules() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("gone", 5)
    q.forget("gone")
    clock.now += 10
    assert q.promote_due() is None
    assert len(q) == 0


async def test_get_waits_for_a_scheduled_key_and_close_stops_workers() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("later", 0.05)
    assert await asyncio.wait_for(q.get(), timeout=5) == "later"
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.close()
    with pytest.raises(QueueClosedError):
        await asyncio.wait_for(waiter, timeout=5)
