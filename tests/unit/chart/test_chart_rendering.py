"""`helm lint` and `helm template` of charts/kuberank: clean, secure by default, least privilege."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.chart.conftest import CHART_DIR, REPO_ROOT, Render

CI_VALUES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
Helm = Callable[..., subprocess.CompletedProcess[str]]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, *, unless: str = "-admission") -> dict[str, Any]:
    """The one object of `kind`, beside the admission rules' own (named *-admission), which
    every release renders."""
    found = [o for o in by_kind(objects, kind) if not o["metadata"]["name"].endswith(unless)]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] == "Pod":
            yield obj["metadata"]["name"], obj["spec"]
        elif obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def test_ci_scenarios_exist() -> None:
    assert len(CI_VALUES) >= 3, f"expected ci/*-values.yaml scenarios in {CHART_DIR / 'ci'}"


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_helm_lint_is_clean(helm: Helm, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART_DIR)]
    if values is not None:
        args += ["--values", str(values)]
    done = helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout, done.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_ci_scenario_renders(render: Render, values: Path) -> None:
    objects = render(values=[values])
    assert one(objects, "Deployment")["kind"] == "Deployment"


def test_defaults_render_the_operator_and_its_rbac(render: Render) -> None:
    objects = render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ConfigMap",  # the admin's admission rules
            "Deployment",
            "Pod",  # the helm test hook
            "Role",  # reads the admission ConfigMap
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    deployment = one(objects, "Deployment")
    assert deployment["metadata"]["name"] == "kuberank"
    assert deployment["metadata"]["namespace"] == "kuberank-system"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/kuberank/kuberank-operator:{chart_app_version()}"
    assert container["command"] == ["kuberank-operator"]


def chart_app_version() -> str:
    return str(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"])


def test_every_object_carries_the_standard_labels(render: Render) -> None:
    everything = render(
        "alertWebhook.enabled=true",
        "monitoring.podMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.grafanaDashboard.enabled=true",
        "commonLabels.team=search",
    )
    for obj in everything:
        labels = obj["metadata"].get("labels", {})
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/name") == "kuberank", name
        assert labels.get("app.kubernetes.io/instance") == "kuberank", name
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", name
        assert labels.get("helm.sh/chart", "").startswith("kuberank-"), name
        assert labels.get("team") == "search", name


def test_selector_labels_select_the_pods_and_nothing_more(render: Render) -> None:
    objects = render("operator.podLabels.extra=yes")
    deployment = one(objects, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    # The selector is immutable: it must not contain labels that change with a release.
    assert "helm.sh/chart" not in selector
    assert "app.kubernetes.io/version" not in selector
    assert one(objects, "Service")["spec"]["selector"] == selector


def test_fullname_follows_release_and_overrides(render: Render) -> None:
    assert one(render(release="search"), "Deployment")["metadata"]["name"] == "search-kuberank"
    assert one(render(release="kuberank-prod"), "Deployment")["metadata"]["name"] == "kuberank-prod"
    named = render("fullnameOverride=rr", release="search")
    assert one(named, "Deployment")["metadata"]["name"] == "rr"
    assert one(named, "ServiceAccount")["metadata"]["name"] == "rr"


@pytest.mark.parametrize(
    "sets",
    [
        (),
        ("alertWebhook.enabled=true", "operator.watchNamespaces={a}"),
    ],
    ids=["defaults", "webhook-namespaced"],
)
def test_every_container_is_locked_down(render: Render, sets: tuple[str, ...]) -> None:
    for name, spec in pod_specs(render(*sets)):
        pod_ctx = spec.get("securityContext", {})
        assert pod_ctx.get("runAsNonRoot") is True, name
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert not spec.get("hostNetwork"), name
        assert not spec.get("hostPID"), name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert ctx["runAsNonRoot"] is True, where
            assert ctx["runAsUser"] != 0, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["privileged"] is False, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            assert container.get("resources", {}).get("requests"), where


def _rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for role in by_kind(objects, "ClusterRole") for rule in role["rules"]]


def test_rbac_grants_no_wildcards_secrets_or_escalation(render: Render) -> None:
    rules = _rules(render("alertWebhook.enabled=true"))
    assert rules
    forbidden_resources = {
        "secrets", "configmaps", "pods/exec", "pods/attach", "pods/portforward",
        "roles", "rolebindings", "clusterroles", "clusterrolebindings", "serviceaccounts/token",
        "nodes/proxy", "customresourcedefinitions-write",
    }  # fmt: skip
    for rule in rules:
        assert "*" not in rule["verbs"], rule
        assert "*" not in rule["resources"], rule
        assert "*" not in rule.get("apiGroups", []), rule
        assert not set(rule["resources"]) & forbidden_resources, rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_cluster_scoped_role_is_read_only(render: Render) -> None:
    cluster = next(
        r for r in by_kind(render(), "ClusterRole") if r["metadata"]["name"].endswith("-cluster")
    )
    for rule in cluster["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


def test_operator_writes_only_status_and_scale_of_its_resource(render: Render) -> None:
    rules = _rules(render())
    own = [r for r in rules if r["apiGroups"] == ["kuberank.dev"]]
    writes = {
        res for r in own if set(r["verbs"]) - {"get", "list", "watch"} for res in r["resources"]
    }
    assert writes == {
        "rerankerdeployments/status",
        "rerankerdeployments/scale",
        "rerankerdeployments/finalizers",
    }


def test_watch_namespaces_binds_only_those_namespaces(render: Render) -> None:
    objects = render("operator.watchNamespaces={search,rag}")
    bindings = [
        b
        for b in by_kind(objects, "RoleBinding")
        if not b["metadata"]["name"].endswith("-admission")
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["rag", "search"]
    for binding in bindings:
        assert binding["roleRef"]["name"] == "kuberank-workloads"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "kuberank", "namespace": "kuberank-system"}
        ]
    # Only the read-only cluster role stays bound cluster-wide.
    assert [b["roleRef"]["name"] for b in by_kind(objects, "ClusterRoleBinding")] == [
        "kuberank-cluster"
    ]
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespaces=search,rag" in args


def test_the_admission_policy_judges_the_watched_namespaces_unless_told_otherwise(
    render: Render,
) -> None:
    """Two releases watching different namespaces (say one with gpu.enabled=false) must not
    refuse each other's resources by their own rules."""
    (everywhere,) = by_kind(render(), "ValidatingAdmissionPolicyBinding")
    assert "matchResources" not in everywhere["spec"]
    (watched,) = by_kind(
        render("operator.watchNamespaces={search,rag}"), "ValidatingAdmissionPolicyBinding"
    )
    assert watched["spec"]["matchResources"]["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["search", "rag"]}
        ]
    }
    (chosen,) = by_kind(
        render(
            "operator.watchNamespaces={search}", "admission.namespaceSelector.matchLabels.team=a"
        ),
        "ValidatingAdmissionPolicyBinding",
    )
    assert chosen["spec"]["matchResources"]["namespaceSelector"] == {"matchLabels": {"team": "a"}}


def test_image_digest_wins_over_tag(render: Render) -> None:
    digest = "sha256:" + "ab" * 32
    objects = render(f"image.digest={digest}", "image.tag=9.9.9", "image.registry=registry.local")
    image = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"registry.local/kuberank/kuberank-operator@{digest}"


def test_webhook_token_secret_is_wired_into_the_operator(render: Render) -> None:
    objects = render("alertWebhook.enabled=true")
    secret = one(objects, "Secret")
    assert secret["metadata"]["name"] == "kuberank-webhook"
    assert set(secret["data"]) == {"token"}
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--alert-webhook=true" in container["args"]
    assert "--alert-webhook-token-secret=kuberank-system/kuberank-webhook" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["webhook"] == 8443
    service_ports = {p["name"] for p in one(objects, "Service")["spec"]["ports"]}
    assert service_ports == {"http", "webhook"}
    # The operator may read exactly this Secret, in its own namespace, and nothing else.
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == "kuberank-system"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["kuberank-webhook"],
            "verbs": ["get"],
        }
    ]
    assert one(objects, "RoleBinding")["roleRef"]["name"] == role["metadata"]["name"]


def test_webhook_namespaces_reach_the_operator(render: Render) -> None:
    from kuberank_operator import cli

    def args(*sets: str) -> list[str]:
        objects = render("alertWebhook.enabled=true", *sets)
        container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        return list(container["args"])

    narrowed = args("alertWebhook.namespaces={search,rag}")
    assert "--alert-webhook-namespaces=search,rag" in narrowed
    assert cli.parse_config(narrowed, env={}).alert_webhook_namespaces == ("search", "rag")
    everywhere = args("alertWebhook.namespaces={*}")
    assert cli.parse_config(everywhere, env={}).alert_webhook_namespaces == ("*",)
    # The default: every watched namespace (the flag is there, empty).
    assert "--alert-webhook-namespaces=" in args()
    assert cli.parse_config(args(), env={}).alert_webhook_namespaces == ()


def test_existing_webhook_secret_is_used_not_created(render: Render) -> None:
    objects = render("alertWebhook.enabled=true", "alertWebhook.existingSecret=am-token")
    assert not by_kind(objects, "Secret")
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--alert-webhook-token-secret=kuberank-system/am-token" in container["args"]
    assert one(objects, "Role")["rules"][0]["resourceNames"] == ["am-token"]


@pytest.mark.parametrize(
    "sets",
    [
        (),
        ("operator.watchNamespaces={a,b}", "operator.logFormat=text"),
        ("alertWebhook.enabled=true", "operator.builtinEvaluator=false", "operator.workers=8"),
    ],
    ids=["defaults", "namespaced", "webhook"],
)
def test_operator_cli_accepts_the_rendered_flags(render: Render, sets: tuple[str, ...]) -> None:
    from kuberank_operator import cli

    container = one(render(*sets), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    config = cli.parse_config(container["args"], env={})
    assert config.metrics_port == container["ports"][0]["containerPort"]
    assert config.namespaces == (("a", "b") if "operator.watchNamespaces={a,b}" in sets else ())
    assert config.leader_election is False
    assert config.alert_webhook == ("alertWebhook.enabled=true" in sets)


def test_several_replicas_elect_a_leader_through_one_lease(render: Render) -> None:
    from kuberank_operator import cli

    objects = render("operator.replicaCount=2", "operator.watchNamespaces={a}")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    config = cli.parse_config(args, env={})
    assert config.leader_election is True
    assert config.leader_election_namespace == "kuberank-system"
    assert config.leader_election_lease == "kuberank"
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == "kuberank-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["kuberank"],
            "verbs": ["get", "update"],
        },
    ]
    single = render()
    # One replica: no leader-election Role (only the admission rules' reader).
    assert [r["metadata"]["name"] for r in by_kind(single, "Role")] == ["kuberank-admission"]
    assert one(single, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_dashboard_configmap_holds_the_dashboard(render: Render) -> None:
    objects = render(
        "monitoring.grafanaDashboard.enabled=true", "monitoring.grafanaDashboard.namespace=grafana"
    )
    [configmap] = [o for o in by_kind(objects, "ConfigMap") if "kuberank.json" in o["data"]]
    assert configmap["metadata"]["namespace"] == "grafana"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((REPO_ROOT / "dashboards" / "kuberank.json").read_text())
    assert json.loads(configmap["data"]["kuberank.json"]) == shipped


def test_prometheus_rule_carries_every_shipped_group(render: Render) -> None:
    rule_files = sorted((CHART_DIR / "files" / "rules").glob("*.yaml"))
    assert rule_files, "the chart ships no alert rules: run `make sync-chart`"
    expected = [
        group["name"] for path in rule_files for group in yaml.safe_load(path.read_text())["groups"]
    ]
    base = "https://runbooks.example.com/kuberank"
    objects = render(
        "monitoring.prometheusRule.enabled=true",
        f"monitoring.prometheusRule.runbookBaseUrl={base}",
        "monitoring.prometheusRule.labels.release=kps",
    )
    rule = one(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert [g["name"] for g in rule["spec"]["groups"]] == expected
    for group in rule["spec"]["groups"]:
        for alert in (r for r in group["rules"] if "alert" in r):
            url = alert.get("annotations", {}).get("runbook_url", "")
            assert url.startswith(base + "/"), f"{alert['alert']}: runbook_url {url!r}"


def test_pod_monitor_scrapes_the_operator_port(render: Render) -> None:
    objects = render("monitoring.podMonitor.enabled=true", "monitoring.podMonitor.interval=15s")
    monitor = one(objects, "PodMonitor")
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {
            "port": "http",
            "path": "/metrics",
            "honorLabels": True,
            "interval": "15s",
            "scrapeTimeout": "10s",
        }
    ]


def test_helm_test_hook_asks_the_operator_service(render: Render) -> None:
    pod = one(render(), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    assert command[-1] == "http://kuberank.kuberank-system.svc:8080/readyz"
    assert not by_kind(render("tests.enabled=false"), "Pod")


@pytest.mark.prometheus
def test_prometheus_rule_groups_pass_promtool(render: Render, tmp_path: Path) -> None:
    rule = one(render("monitoring.prometheusRule.enabled=true"), "PrometheusRule")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_gpu_enabled_false_runs_the_operator_without_accelerator(render: Render) -> None:
    def accelerator(*values: str) -> list[str]:
        objects = render(*values)
        args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        return [a for a in args if a.startswith("--accelerator")]

    assert accelerator() == ["--accelerator=nvidia"], "GPUs are the default"
    assert accelerator("gpu.enabled=false") == ["--accelerator=none"]


def test_images_default_to_the_two_built_images(render: Render) -> None:
    """The operator (and sidecar) image and, for admission, the inference image's repository."""
    objects = render()
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    operator_image = f"ghcr.io/kuberank/kuberank-operator:{chart_app_version()}"
    assert container["image"] == operator_image
    assert f"--sidecar-image={operator_image}" in container["args"]
    rules = one(objects, "ConfigMap", unless="-none")["data"]
    assert rules["allowedImageRepositories"] == "ghcr.io/kuberank/kuberank-inference"
    moved = render("image.registry=registry.example.com")
    rules = one(moved, "ConfigMap", unless="-none")["data"]
    assert rules["allowedImageRepositories"] == "registry.example.com/kuberank/kuberank-inference"
