"""BatchPlanner: which waiting sequences run together next. Pure: no threads, no clock, no torch.

Rules, in order:
- every batch contains a sequence of the oldest waiting request, so nothing waits forever;
- a batch stays within the token budget and the sequence cap (a single sequence over the budget
  still runs, alone);
- with a padding-free model, requests are served first come first served (a request's pairs stay
  together, which keeps its latency low);
- with a padded model, sequences of similar length (at least half the longest) are grouped
  around the oldest request's longest sequence to cut padding, unless the oldest request has
  waited longer than `starvation_seconds`, when its sequences go first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

# a padded batch takes no sequence shorter than this fraction of its longest (at most half
# of a row is padding); shorter ones wait for a batch of their own length
_MIN_FILL = 0.5


@dataclass(frozen=True, slots=True)
class PlannedItem:
    """One sequence waiting for a batch."""

    job_id: int
    index: int
    num_tokens: int


@dataclass(slots=True)
class _WaitingJob:
    items: list[PlannedItem]
    enqueued_at: float


def batch_cost(lengths: list[int], *, padded: bool) -> int:
    """Tokens the device processes for these sequence lengths (padded to the longest, or not)."""
    if not lengths:
        return 0
    return len(lengths) * max(lengths) if padded else sum(lengths)


def padding_ratio(lengths: list[int], *, padded: bool) -> float:
    """Fraction of the processed token slots that are padding."""
    cost = batch_cost(lengths, padded=padded)
    return 0.0 if cost == 0 else 1.0 - sum(lengths) / cost


class BatchPlanner:
    def __init__(
        self,
        *,
        max_batch_size: int,
        padded: bool,
        starvation_seconds: float = 1.0,
        lookahead: int = 4,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._max_batch_size = max_batch_size
        self._padded = padded
        self._starvation_seconds = starvation_seconds
        self._lookahead = lookahead
        self._jobs: OrderedDict[int, _WaitingJob] = OrderedDict()
        self._pending_items = 0
        self._pending_tokens = 0

    @property
    def padded(self) -> bool:
        return self._padded

    @property
    def pending_items(self) -> int:
        return self._pending_items

    @property
    def pending_tokens(self) -> int:
        return self._pending_tokens

    def add(self, job_id: int, items: list[PlannedItem], *, now: float) -> None:
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} is already waiting")
        if not items:
            return
        self._jobs[job_id] = _WaitingJob(items=list(items), enqueued_at=now)
        self._pending_items += len(items)
        self._pending_tokens += sum(item.num_tokens for item in items)

    def drop(self, job_id: int) -> int:
        """Forget a job's waiting sequences (its client left); returns how many were dropped."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return 0
        self._pending_items -= len(job.items)
        self._pending_tokens -= sum(item.num_tokens for item in job.items)
        return len(job.items)

    def next_batch(self, *, token_budget: int, now: float) -> list[PlannedItem]:
        if not self._jobs:
            return []
        oldest = next(iter(self._jobs.values()))
        starving = now - oldest.enqueued_at >= self._starvation_seconds
        if self._padded and not starving:
            chosen = self._length_grouped(token_budget)
        else:
            chosen = self._first_come(token_budget)
        self._remove(chosen)
        return chosen

    def _first_come(self, token_budget: int) -> list[PlannedItem]:
        chosen: list[PlannedItem] = []
        lengths: list[int] = []
        for job in self._jobs.values():
            # longest first within a request, so its padding stays small when padded
            for item in sorted(job.items, key=lambda it: -it.num_tokens):
                if len(chosen) >= self._max_batch_size:
                    return chosen
                cost = batch_cost([*lengths, item.num_tokens], padded=self._padded)
                if chosen and cost > token_budget:
                    return chosen
                chosen.append(item)
                lengths.append(item.num_tokens)
        return chosen

    def _length_grouped(self, token_budget: int) -> list[PlannedItem]:
        candidates = self._window(token_budget)
        jobs = iter(self._jobs.values())
        anchor = max(next(jobs).items, key=lambda it: it.num_tokens)
        ordered = sorted(candidates, key=lambda it: it.num_tokens)
        position = ordered.index(anchor)
        # items no longer than the anchor cost no extra padding: take the closest ones first
        chosen = [anchor]
        longest = shortest = anchor.num_tokens
        low, high = position - 1, position + 1
        while len(chosen) < self._max_batch_size:
            if (
                low >= 0
                and ordered[low].num_tokens >= longest * _MIN_FILL
                and (len(chosen) + 1) * longest <= token_budget
            ):
                shortest = ordered[low].num_tokens
                chosen.append(ordered[low])
                low -= 1
                continue
            if high < len(ordered):
                grown = ordered[high].num_tokens
                if shortest >= grown * _MIN_FILL and (len(chosen) + 1) * grown <= token_budget:
                    chosen.append(ordered[high])
                    longest = grown
                    high += 1
                    continue
            break
        return chosen

    def _window(self, token_budget: int) -> list[PlannedItem]:
        limit_items = self._lookahead * self._max_batch_size
        limit_tokens = self._lookahead * token_budget
        window: list[PlannedItem] = []
        tokens = 0
        for job in self._jobs.values():
            window.extend(job.items)
            tokens += sum(item.num_tokens for item in job.items)
            if len(window) >= limit_items or tokens >= limit_tokens:
                break
        return window

    def _remove(self, chosen: list[PlannedItem]) -> None:
        by_job: dict[int, set[int]] = {}
        for item in chosen:
            by_job.setdefault(item.job_id, set()).add(item.index)
        for job_id, indexes in by_job.items():
            job = self._jobs[job_id]
            job.items = [item for item in job.items if item.index not in indexes]
            if not job.items:
                del self._jobs[job_id]
        self._pending_items -= len(chosen)
        self._pending_tokens -= sum(item.num_tokens for item in chosen)
