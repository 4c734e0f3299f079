"""The operator's re-check of the admin's rules: the same verdicts as the chart's policy."""

from __future__ import annotations

import pytest

from kuberank_operator.model.admission import AdmissionPolicy, check
from tests.hostile_specs import (
    ALLOWED_HOST_PATH,
    ALLOWED_REPOSITORY,
    POLICY_CASES,
    HostileCase,
    base_spec,
)

NAMESPACE = "team-a"
POLICY = AdmissionPolicy(
    tuning_namespaces=("gpu-tuners",),
    host_path_prefixes=(ALLOWED_HOST_PATH,),
    image_repositories=(ALLOWED_REPOSITORY,),
)


def test_the_control_spec_passes() -> None:
    assert check(base_spec(), namespace=NAMESPACE, policy=POLICY) == []


@pytest.mark.parametrize("case", POLICY_CASES, ids=lambda case: case.id)
def test_each_hostile_spec_is_refused_by_its_rule(case: HostileCase) -> None:
    refusals = check(case.spec(), namespace=NAMESPACE, policy=POLICY)
    assert [(r.rule, r.field) for r in refusals] == [(case.refused_by, case.field)]
    assert case.field in refusals[0].message
    assert "admission." in refusals[0].message  # names the chart value that would allow it


def test_the_defaults_are_the_charts_defaults() -> None:
    policy = AdmissionPolicy()
    # No host path, only the chart's image, ClusterIP only, no tuning anywhere.
    rules = {r.rule for r in check(base_spec(), namespace=NAMESPACE, policy=policy)}
    assert rules == {"host-path-prefixes"}
    pvc = {"model": {"id": "m", "source": {"pvc": {"claimName": "weights"}}}}
    assert check(pvc, namespace=NAMESPACE, policy=policy) == []


def test_tuning_is_allowed_in_the_listed_namespace() -> None:
    spec = base_spec() | {"gpu": {"powerLimitWatts": 300}}
    assert check(spec, namespace="gpu-tuners", policy=POLICY) == []
    assert [r.rule for r in check(spec, namespace=NAMESPACE, policy=POLICY)] == [
        "tuning-namespaces"
    ]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (ALLOWED_HOST_PATH, True),
        (ALLOWED_HOST_PATH + "/", True),
        (ALLOWED_HOST_PATH + "/a/b", True),
        (ALLOWED_HOST_PATH + "2", False),
        ("/var/lib/kuberank", False),
    ],
)
def test_host_path_prefixes_match_whole_directories(path: str, allowed: bool) -> None:
    spec = {"model": {"id": "m", "source": {"hostPath": {"path": path}}}}
    assert (check(spec, namespace=NAMESPACE, policy=POLICY) == []) is allowed


@pytest.mark.parametrize(
    ("reference", "allowed"),
    [
        (f"{ALLOWED_REPOSITORY}:1", True),
        (f"{ALLOWED_REPOSITORY}@sha256:{'a' * 64}", True),
        (ALLOWED_REPOSITORY, True),
        (f"{ALLOWED_REPOSITORY}-x:1", False),
        ("registry.example.com/models/m:1", True),
        ("registry.example.com/modelsx:1", False),
    ],
)
def test_image_repositories_match_exactly_or_below_a_slash(reference: str, allowed: bool) -> None:
    policy = AdmissionPolicy(
        host_path_prefixes=(ALLOWED_HOST_PATH,),
        image_repositories=(ALLOWED_REPOSITORY, "registry.example.com/models/"),
    )
    spec = {"model": {"id": "m", "source": {"image": {"reference": reference}}}}
    assert (check(spec, namespace=NAMESPACE, policy=policy) == []) is allowed


def test_an_allowed_annotation_prefix_lets_a_reserved_key_through() -> None:
    key = "cluster-autoscaler.kubernetes.io/safe-to-evict"
    spec = base_spec() | {"podAnnotations": {key: "false", "team.example.com/owner": "search"}}
    assert [r.rule for r in check(spec, namespace=NAMESPACE, policy=POLICY)] == [
        "reserved-annotations"
    ]
    allowing = AdmissionPolicy(
        host_path_prefixes=(ALLOWED_HOST_PATH,),
        image_repositories=(ALLOWED_REPOSITORY,),
        pod_annotation_prefixes=("cluster-autoscaler.kubernetes.io/",),
    )
    assert check(spec, namespace=NAMESPACE, policy=allowing) == []


def test_the_policy_reads_the_charts_configmap() -> None:
    policy = AdmissionPolicy.from_configmap_data(
        {
            "tuningNamespaces": "a,b",
            "allowedHostPathPrefixes": "",
            "allowedImageRepositories": "r/x,r/y/",
            "allowedServiceTypes": "ClusterIP,NodePort",
            "allowedPriorityClassNames": "",
            "allowedPodAnnotationPrefixes": "",
        }
    )
    assert policy.tuning_namespaces == ("a", "b")
    assert policy.host_path_prefixes == ()
    assert policy.image_repositories == ("r/x", "r/y/")
    assert policy.service_types == ("ClusterIP", "NodePort")
