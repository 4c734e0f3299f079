"""BatchPlanner: budgets, caps, first-come order when padding-free, length grouping when padded,
and no starvation."""

from __future__ import annotations

import pytest

from kuberank_inference.engine.planning import (
    BatchPlanner,
    PlannedItem,
    batch_cost,
    padding_ratio,
)


def items(job: int, lengths: list[int]) -> list[PlannedItem]:
    return [PlannedItem(job, i, n) for i, n in enumerate(lengths)]


def test_batch_cost_padded_and_packed() -> None:
    assert batch_cost([10, 30, 20], padded=True) == 90
    assert batch_cost([10, 30, 20], padded=False) == 60
    assert padding_ratio([10, 30, 20], padded=True) == pytest.approx(1 - 60 / 90)
    assert padding_ratio([10, 30, 20], padded=False) == 0.0


def test_packed_batches_stay_within_budget_and_keep_arrival_order() -> None:
    planner = BatchPlanner(max_batch_size=100, padded=False)
    planner.add(1, items(1, [40, 40]), now=0.0)
    planner.add(2, items(2, [40, 40]), now=0.1)
    first = planner.next_batch(token_budget=100, now=0.2)
    assert [(i.job_id, i.num_tokens) for i in first] == [(1, 40), (1, 40)]
    second = planner.next_batch(token_budget=100, now=0.2)
    assert {i.job_id for i in second} == {2}
    assert planner.pending_items == 0
    assert planner.next_batch(token_budget=100, now=0.3) == []


def test_batch_size_cap() -> None:
    planner = BatchPlanner(max_batch_size=3, padded=False)
    planner.add(1, items(1, [1] * 10), now=0.0)
    sizes = []
    while planner.pending_items:
        sizes.append(len(planner.next_batch(token_budget=10_000, now=0.0)))
    assert sizes == [3, 3, 3, 1]


def test_a_sequence_over_the_budget_still_runs_alone() -> None:
    planner = BatchPlanner(max_batch_size=8, padded=True)
    planner.add(1, items(1, [500, 10]), now=0.0)
    batch = planner.next_batch(token_budget=100, now=0.0)
    assert [i.num_tokens for i in batch] == [500]


def test_padded_batches_group_similar_lengths() -> None:
    planner = BatchPlanner(max_batch_size=4, padded=True, starvation_seconds=10.0)
    planner.add(1, items(1, [100, 12]), now=0.0)
    planner.add(2, items(2, [10, 98, 11, 97]), now=0.1)
    first = planner.next_batch(token_budget=400, now=0.2)
    # grouped around the oldest request's longest sequence: the ~100-token ones
    assert sorted(i.num_tokens for i in first) == [97, 98, 100]
    second = planner.next_batch(token_budget=400, now=0.2)
    assert sorted(i.num_tokens for i in second) == [10, 11, 12]
    assert padding_ratio([i.num_tokens for i in second], padded=True) < 0.1


def test_every_batch_serves_the_oldest_request() -> None:
    planner = BatchPlanner(max_batch_size=2, padded=True, starvation_seconds=10.0)
    planner.add(1, items(1, [5]), now=0.0)
    # many newer requests with lengths that group well with each other, not with job 1
    for job in range(2, 30):
        planner.add(job, items(job, [200]), now=0.01 * job)
    batch = planner.next_batch(token_budget=400, now=1.0)
    assert 1 in {i.job_id for i in batch}


def test_starving_request_goes_first_in_arrival_order() -> None:
    planner = BatchPlanner(max_batch_size=10, padded=True, starvation_seconds=0.5)
    planner.add(1, items(1, [10, 200, 10]), now=0.0)
    planner.add(2, items(2, [10, 10]), now=0.1)
    batch = planner.next_batch(token_budget=10_000, now=0.6)
    assert [i.job_id for i in batch][:3] == [1, 1, 1]


def test_drop_forgets_a_jobs_waiting_items() -> None:
    planner = BatchPlanner(max_batch_size=10, padded=False)
    planner.add(1, items(1, [5, 5, 5]), now=0.0)
    planner.add(2, items(2, [7]), now=0.0)
    assert planner.drop(1) == 3
    assert planner.drop(1) == 0
    assert planner.pending_items == 1
    assert planner.pending_tokens == 7
    assert [i.job_id for i in planner.next_batch(token_budget=100, now=0.0)] == [2]


def test_adding_a_job_twice_is_refused() -> None:
    planner = BatchPlanner(max_batch_size=10, padded=False)
    planner.add(1, items(1, [5]), now=0.0)
    with pytest.raises(ValueError, match="already waiting"):
        planner.add(1, items(1, [5]), now=0.0)
