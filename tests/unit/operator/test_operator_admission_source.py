"""Where the operator's re-check gets the admin's rules: the chart's ConfigMap, cached."""

from __future__ import annotations

import pytest

from kuberank_operator.cluster.admission_source import AdmissionSource, configmap_ref
from kuberank_operator.model.admission import AdmissionPolicy


class Reads:
    def __init__(self, answers: list[dict[str, str] | None]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append((namespace, name))
        return self.answers.pop(0)


async def test_without_a_configmap_the_builtin_rules_apply() -> None:
    reads = Reads([])
    assert await AdmissionSource(reads, None).current() == AdmissionPolicy()
    assert reads.calls == []


async def test_the_configmap_is_read_at_most_once_per_ttl() -> None:
    now = [100.0]
    reads = Reads([{"tuningNamespaces": "a"}, {"tuningNamespaces": "b"}])
    source = AdmissionSource(
        reads, ("kuberank-system", "kuberank-admission"), ttl=10, clock=lambda: now[0]
    )
    assert (await source.current()).tuning_namespaces == ("a",)
    now[0] = 109.0
    assert (await source.current()).tuning_namespaces == ("a",)
    now[0] = 110.5
    assert (await source.current()).tuning_namespaces == ("b",)
    assert reads.calls == [("kuberank-system", "kuberank-admission")] * 2


async def test_an_unreadable_configmap_falls_back_to_the_builtin_rules() -> None:
    reads = Reads([{"allowedHostPathPrefixes": "/models"}, None])
    now = [0.0]
    source = AdmissionSource(reads, ("ns", "rules"), ttl=1, clock=lambda: now[0])
    assert (await source.current()).host_path_prefixes == ("/models",)
    now[0] = 5.0
    # Deleted, or the operator lost the right to read it: never more than the chart's defaults.
    assert await source.current() == AdmissionPolicy()


@pytest.mark.parametrize("value", ["rules", "ns/", "/rules", "a/b/c"])
def test_a_malformed_reference_names_the_flag(value: str) -> None:
    with pytest.raises(ValueError, match="--admission-configmap"):
        configmap_ref(value)


def test_the_empty_reference_means_the_builtin_rules() -> None:
    assert configmap_ref("") is None
    assert configmap_ref("kuberank-system/kuberank-admission") == (
        "kuberank-system",
        "kuberank-admission",
    )
