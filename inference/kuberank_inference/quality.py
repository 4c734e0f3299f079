"""The FP8 quality gate's arithmetic: ranking agreement between two scorings of the same queries,
and the decision whether the candidate (FP8) may serve. Pure Python: scores in, verdict out.

Agreement is measured per query, over that query's documents, then averaged over queries:
- Spearman's rank correlation of the two score lists (ties get their average rank);
- top-k overlap: the share of the reference's k best documents that the candidate also puts in
  its k best (k is capped by the number of documents).
The gate passes when both means reach their thresholds. See docs/inference.md (FP8) for how the
default thresholds were chosen from the bf16-against-float32 agreement measured on an H200.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("kuberank_inference.quality")

# The defaults of --fp8-min-spearman and --fp8-min-top-k-overlap (kuberank_inference.config).
DEFAULT_MIN_SPEARMAN = 0.98
DEFAULT_MIN_TOP_K_OVERLAP = 0.9
DEFAULT_TOP_K = 10


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ascending; tied values share the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2 + 1
        for position in range(start, end + 1):
            out[order[position]] = rank
        start = end + 1
    return out


def spearman(reference: Sequence[float], candidate: Sequence[float]) -> float:
    """Spearman's rank correlation. Two constant lists agree (1.0); one constant list against
    one that is not carries no ranking (0.0)."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference scores against {len(candidate)}")
    if len(reference) < 2:
        return 1.0
    a, b = ranks(reference), ranks(candidate)
    mean = (len(a) + 1) / 2
    da = [x - mean for x in a]
    db = [x - mean for x in b]
    var_a = sum(x * x for x in da)
    var_b = sum(x * x for x in db)
    if var_a == 0 and var_b == 0:
        return 1.0
    if var_a == 0 or var_b == 0:
        return 0.0
    return sum(x * y for x, y in zip(da, db, strict=True)) / math.sqrt(var_a * var_b)


def top_k(values: Sequence[float], k: int) -> set[int]:
    """Indices of the k largest values (ties broken by the lower index)."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return set(order[:k])


def top_k_overlap(reference: Sequence[float], candidate: Sequence[float], k: int) -> float:
    """Share of the reference's top k that is also in the candidate's top k."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference scores against {len(candidate)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    k = min(k, len(reference))
    if k == 0:
        return 1.0
    return len(top_k(reference, k) & top_k(candidate, k)) / k


@dataclass(frozen=True, slots=True)
class Agreement:
    """Ranking agreement of a candidate scoring with a reference, averaged over queries."""

    queries: int
    pairs: int
    k: int
    mean_spearman: float
    min_spearman: float
    mean_top_k_overlap: float
    min_top_k_overlap: float

    def as_json(self) -> dict[str, float | int]:
        return {
            "queries": self.queries,
            "pairs": self.pairs,
            "k": self.k,
            "mean_spearman": round(self.mean_spearman, 5),
            "min_spearman": round(self.min_spearman, 5),
            "mean_top_k_overlap": round(self.mean_top_k_overlap, 5),
            "min_top_k_overlap": round(self.min_top_k_overlap, 5),
        }


def agreement(
    reference: Sequence[Sequence[float]],
    candidate: Sequence[Sequence[float]],
    *,
    k: int = DEFAULT_TOP_K,
) -> Agreement:
    """Per-query Spearman and top-k overlap of `candidate` against `reference`, averaged."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference queries against {len(candidate)}")
    if not reference:
        raise ValueError("no queries to compare")
    rhos = [spearman(r, c) for r, c in zip(reference, candidate, strict=True)]
    overlaps = [top_k_overlap(r, c, k) for r, c in zip(reference, candidate, strict=True)]
    return Agreement(
        queries=len(reference),
        pairs=sum(len(r) for r in reference),
        k=k,
        mean_spearman=sum(rhos) / len(rhos),
        min_spearman=min(rhos),
        mean_top_k_overlap=sum(overlaps) / len(overlaps),
        min_top_k_overlap=min(overlaps),
    )


@dataclass(frozen=True, slots=True)
class GateThresholds:
    min_spearman: float = DEFAULT_MIN_SPEARMAN
    min_top_k_overlap: float = DEFAULT_MIN_TOP_K_OVERLAP
    k: int = DEFAULT_TOP_K


@dataclass(frozen=True, slots=True)
class GateVerdict:
    passed: bool
    reason: str


def gate_decision(measured: Agreement, thresholds: GateThresholds) -> GateVerdict:
    """Whether FP8 may serve, and a sentence that says why (with the figures)."""
    figures = (
        f"mean Spearman {measured.mean_spearman:.4f} (at least {thresholds.min_spearman}), "
        f"mean top-{measured.k} overlap {measured.mean_top_k_overlap:.3f} "
        f"(at least {thresholds.min_top_k_overlap}) over {measured.queries} queries, "
        f"{measured.pairs} pairs"
    )
    failed = []
    if not measured.mean_spearman >= thresholds.min_spearman:
        failed.append("rank correlation")
    if not measured.mean_top_k_overlap >= thresholds.min_top_k_overlap:
        failed.append(f"top-{measured.k} overlap")
    if failed:
        return GateVerdict(
            passed=False,
            reason=f"FP8 ranks unlike bfloat16 ({' and '.join(failed)} below the threshold): "
            + figures,
        )
    return GateVerdict(passed=True, reason="FP8 ranks like bfloat16: " + figures)


@dataclass(frozen=True, slots=True)
class PrecisionReport:
    """What precision was asked for, what serves, and why (shown in /info and as metrics).

    state: "not_requested" (dtype is not fp8), "active" (FP8 serves), "refused_device" (the
    device has no FP8), "refused_model" (the model's layers cannot run in FP8), "refused_gate"
    (the quality gate failed), "failed" (the FP8 kernels raised at start-up).
    """

    requested: str
    served: str
    state: str
    reason: str
    agreement: Agreement | None = None
    thresholds: GateThresholds | None = None

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "requested": self.requested,
            "served": self.served,
            "state": self.state,
            "reason": self.reason,
        }
        if self.agreement is not None:
            body["agreement"] = self.agreement.as_json()
        if self.thresholds is not None:
            body["thresholds"] = {
                "min_spearman": self.thresholds.min_spearman,
                "min_top_k_overlap": self.thresholds.min_top_k_overlap,
                "k": self.thresholds.k,
            }
        return body


FP8_STATES = ("active", "refused_device", "refused_model", "refused_gate", "failed")

Scores = list[list[float]]


def run_gate(
    *,
    reference: Callable[[], Scores],
    candidate: Callable[[], Scores],
    thresholds: GateThresholds,
    fallback: str,
) -> PrecisionReport:
    """Score the calibration set both ways and decide. `reference` (bf16) and `candidate` (FP8)
    each return one list of scores per query; a candidate that raises is refused ("failed"),
    as is one whose scores are not finite. `fallback` is the dtype that serves on refusal."""
    try:
        expected = reference()
        measured_scores = candidate()
    except Exception as error:  # a kernel that fails to build or run: refuse, keep serving
        log.exception("the FP8 forward failed at start-up")
        return _refused("failed", f"the FP8 forward failed at start-up: {error}", fallback)
    if not all(math.isfinite(x) for scores in measured_scores for x in scores):
        return _refused("failed", "the FP8 forward gave scores that are not finite", fallback)
    measured = agreement(expected, measured_scores, k=thresholds.k)
    verdict = gate_decision(measured, thresholds)
    if not verdict.passed:
        return _refused(
            "refused_gate", verdict.reason, fallback, agreement=measured, thresholds=thresholds
        )
    log.info("dtype fp8: %s", verdict.reason)
    return PrecisionReport(
        "fp8", "fp8", "active", verdict.reason, agreement=measured, thresholds=thresholds
    )


def refused(state: str, reason: str, fallback: str) -> PrecisionReport:
    """FP8 refused before the gate ran (the device or the model cannot run it)."""
    return _refused(state, reason, fallback)


def _refused(
    state: str,
    reason: str,
    fallback: str,
    *,
    agreement: Agreement | None = None,
    thresholds: GateThresholds | None = None,
) -> PrecisionReport:
    log.warning("dtype fp8 refused, serving %s: %s", fallback, reason)
    return PrecisionReport("fp8", fallback, state, reason, agreement, thresholds)
