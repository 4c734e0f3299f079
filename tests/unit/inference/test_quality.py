"""The FP8 quality gate's arithmetic (rank correlation, top-k overlap, the decision) on fake
scores, its calibration set, and the gate run against a fake model: a word-overlap scorer as
"bf16" and perturbed copies of it as "FP8"."""

from __future__ import annotations

import math
import random

import pytest

from kuberank_inference.gateset import DOCUMENTS_PER_QUERY, gate_set
from kuberank_inference.quality import (
    DEFAULT_MIN_SPEARMAN,
    DEFAULT_MIN_TOP_K_OVERLAP,
    Agreement,
    GateThresholds,
    PrecisionReport,
    agreement,
    gate_decision,
    ranks,
    refused,
    run_gate,
    spearman,
    top_k_overlap,
)


def test_ranks_average_ties() -> None:
    assert ranks([10.0, 30.0, 20.0]) == [1.0, 3.0, 2.0]
    assert ranks([1.0, 2.0, 2.0, 3.0]) == [1.0, 2.5, 2.5, 4.0]
    assert ranks([]) == []


def test_spearman_of_same_reversed_and_monotone_orders() -> None:
    scores = [0.1, 0.9, 0.4, 0.7, 0.3]
    assert spearman(scores, scores) == pytest.approx(1.0)
    assert spearman(scores, [-x for x in scores]) == pytest.approx(-1.0)
    # only the order counts, not the values
    assert spearman(scores, [math.exp(10 * x) for x in scores]) == pytest.approx(1.0)


def test_spearman_of_one_swap_matches_the_formula() -> None:
    # n = 5, one adjacent swap: rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert spearman([1, 2, 3, 4, 5], [1, 2, 3, 5, 4]) == pytest.approx(0.9)


def test_spearman_of_constant_lists() -> None:
    assert spearman([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == 1.0
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0
    assert spearman([5.0], [7.0]) == 1.0


def test_spearman_refuses_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="3 reference scores against 2"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])


def test_top_k_overlap() -> None:
    reference = [9.0, 8.0, 7.0, 1.0, 0.0]
    assert top_k_overlap(reference, reference, 3) == 1.0
    # the candidate swaps the third and fourth: two of the top three stay
    assert top_k_overlap(reference, [9.0, 8.0, 1.0, 7.0, 0.0], 3) == pytest.approx(2 / 3)
    # k is capped by the number of documents
    assert top_k_overlap(reference, list(reversed(reference)), 10) == 1.0
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_k_overlap(reference, reference, 0)


def test_agreement_averages_over_queries() -> None:
    same = [[3.0, 2.0, 1.0, 0.0]]
    swapped = [[0.0, 1.0, 2.0, 3.0]]
    measured = agreement(same + same, same + swapped, k=2)
    assert measured.queries == 2
    assert measured.pairs == 8
    assert measured.mean_spearman == pytest.approx(0.0)
    assert measured.min_spearman == pytest.approx(-1.0)
    assert measured.mean_top_k_overlap == pytest.approx(0.5)
    assert measured.min_top_k_overlap == 0.0
    with pytest.raises(ValueError, match="no queries"):
        agreement([], [])


def _measured(rho: float, overlap: float) -> Agreement:
    return Agreement(
        queries=24,
        pairs=480,
        k=10,
        mean_spearman=rho,
        min_spearman=rho,
        mean_top_k_overlap=overlap,
        min_top_k_overlap=overlap,
    )


@pytest.mark.parametrize(
    ("rho", "overlap", "passed", "failing"),
    [
        (0.993, 0.971, True, ""),  # MiniLM on an H200
        (DEFAULT_MIN_SPEARMAN, DEFAULT_MIN_TOP_K_OVERLAP, True, ""),  # the thresholds pass
        (0.97, 0.95, False, "rank correlation"),
        (0.99, 0.85, False, "top-10 overlap"),
        (0.87, 0.83, False, "rank correlation and top-10 overlap"),  # random weights
        (math.nan, 1.0, False, "rank correlation"),
    ],
)
def test_gate_decision(rho: float, overlap: float, passed: bool, failing: str) -> None:
    verdict = gate_decision(_measured(rho, overlap), GateThresholds())
    assert verdict.passed is passed
    assert "24 queries, 480 pairs" in verdict.reason
    if not passed:
        assert f"({failing} below the threshold)" in verdict.reason


def test_gate_set_is_fixed_and_well_formed() -> None:
    queries = gate_set()
    assert gate_set() == queries
    assert len(queries) == 24
    assert sum(len(q.documents) for q in queries) == 480
    for item in queries:
        assert len(item.documents) == DOCUMENTS_PER_QUERY
        assert len(set(item.documents)) == DOCUMENTS_PER_QUERY
        assert item.relevant == 4
    own = {q.query: q.documents[:4] for q in queries}
    for item in queries:
        # the sixteen other documents come from other topics
        others = set(item.documents[4:])
        assert not others & set(own[item.query])


def _words(text: str) -> set[str]:
    return {w.strip(".,?'").lower() for w in text.split()} - {"the", "a", "of", "to", "and"}


def fake_model_scores(*, noise: float = 0.0, seed: int = 0) -> list[list[float]]:
    """A fake model: word overlap of query and document (with a length tie-break), plus noise."""
    generator = random.Random(seed)
    scores = []
    for item in gate_set():
        query = _words(item.query)
        scores.append(
            [
                len(query & _words(doc)) + 0.01 * len(doc) / 100 + generator.gauss(0, noise)
                for doc in item.documents
            ]
        )
    return scores


def test_the_fake_model_ranks_relevant_documents_first() -> None:
    hits = 0
    for item, scores in zip(gate_set(), fake_model_scores(), strict=True):
        best = max(range(len(scores)), key=scores.__getitem__)
        hits += best < item.relevant
    assert hits >= 18


def test_gate_keeps_a_candidate_that_ranks_alike() -> None:
    report = run_gate(
        reference=fake_model_scores,
        candidate=lambda: fake_model_scores(noise=1e-4, seed=1),
        thresholds=GateThresholds(),
        fallback="bfloat16",
    )
    assert report.state == "active"
    assert report.served == "fp8"
    assert report.agreement is not None
    assert report.agreement.mean_spearman >= DEFAULT_MIN_SPEARMAN
    assert report.as_json()["thresholds"] == {
        "min_spearman": 0.98,
        "min_top_k_overlap": 0.9,
        "k": 10,
    }


def test_gate_refuses_a_candidate_that_ranks_unlike(caplog: pytest.LogCaptureFixture) -> None:
    report = run_gate(
        reference=fake_model_scores,
        candidate=lambda: fake_model_scores(noise=0.5, seed=2),
        thresholds=GateThresholds(),
        fallback="bfloat16",
    )
    assert report.state == "refused_gate"
    assert report.served == "bfloat16"
    assert report.reason.startswith("FP8 ranks unlike bfloat16")
    assert "dtype fp8 refused, serving bfloat16" in caplog.text
    body = report.as_json()
    assert body["state"] == "refused_gate"
    assert isinstance(body["agreement"], dict)
    # thresholds of 0 keep it whatever it measures (the random-weight benchmark shapes)
    kept = run_gate(
        reference=fake_model_scores,
        candidate=lambda: fake_model_scores(noise=0.5, seed=2),
        thresholds=GateThresholds(min_spearman=0.0, min_top_k_overlap=0.0),
        fallback="bfloat16",
    )
    assert kept.state == "active"


def test_gate_refuses_a_candidate_that_fails_or_gives_nan() -> None:
    def broken() -> list[list[float]]:
        raise RuntimeError("no kernel image is available")

    failed = run_gate(
        reference=fake_model_scores, candidate=broken, thresholds=GateThresholds(), fallback="x"
    )
    assert failed.state == "failed"
    assert "no kernel image is available" in failed.reason
    assert failed.agreement is None

    def nan() -> list[list[float]]:
        return [[math.nan] * len(s) for s in fake_model_scores()]

    nans = run_gate(
        reference=fake_model_scores, candidate=nan, thresholds=GateThresholds(), fallback="x"
    )
    assert nans.state == "failed"
    assert "not finite" in nans.reason


def test_refused_before_the_gate() -> None:
    report = refused("refused_device", "the device is cpu", "float32")
    assert report == PrecisionReport("fp8", "float32", "refused_device", "the device is cpu")
    assert "agreement" not in report.as_json()
