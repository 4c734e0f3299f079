"""kuberank-operator's flags and their KUBERANK_* environment variables."""

from __future__ import annotations

import pytest

from kuberank_operator.cli import build_parser, env_name, parse_config
from kuberank_operator.settings import OperatorConfig


def test_defaults() -> None:
    config = parse_config([], env={})
    assert config == OperatorConfig()
    assert config.clusterwide


def test_environment_sets_and_flags_win() -> None:
    env = {
        "KUBERANK_NAMESPACES": "search, rag",
        "KUBERANK_LOG_FORMAT": "text",
        "KUBERANK_METRICS_PORT": "9100",
        "KUBERANK_LEADER_ELECTION": "true",
        "POD_NAMESPACE": "kuberank-system",
        "KUBERANK_SIDECAR_POD_RESOURCES": "true",
    }
    config = parse_config([], env=env)
    assert config.namespaces == ("search", "rag")
    assert not config.clusterwide
    assert (config.log_format, config.metrics_port) == ("text", 9100)
    assert config.leader_election
    assert config.leader_election_namespace == "kuberank-system"
    assert config.sidecar_pod_resources
    flagged = parse_config(["--metrics-port", "0", "--namespaces", "only"], env=env)
    assert (flagged.metrics_port, flagged.namespaces) == (0, ("only",))


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        (
            {"KUBERANK_WORKERS": "0"},
            "KUBERANK_WORKERS='0' is not valid for --workers: must be 1 or more",
        ),
        ({"KUBERANK_LOG_FORMAT": "xml"}, "choose one of json, text"),
        ({"KUBERANK_SIDECAR_POD_RESOURCES": "maybe"}, "use true or false"),
        ({"KUBERANK_RESYNC_SECONDS": "1"}, "at least 10 seconds"),
        ({"KUBERANK_LEADER_ELECTION_SECONDS": "1"}, "must be 3 to 300 seconds"),
        (
            {"KUBERANK_ALERT_WEBHOOK_NAMESPACES": "search,Team_B"},
            "KUBERANK_ALERT_WEBHOOK_NAMESPACES='search,Team_B' is not valid for "
            "--alert-webhook-namespaces: 'Team_B' is not a namespace name",
        ),
    ],
)
def test_bad_environment_names_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_config([], env=env)
    assert fragment in str(exc.value)


def test_alert_webhook_namespaces() -> None:
    assert parse_config([], env={}).alert_webhook_namespaces == ()
    env = {"KUBERANK_ALERT_WEBHOOK_NAMESPACES": "search, rag"}
    assert parse_config([], env=env).alert_webhook_namespaces == ("search", "rag")
    flagged = parse_config(["--alert-webhook-namespaces=*"], env=env)
    assert flagged.alert_webhook_namespaces == ("*",)
    assert parse_config(["--alert-webhook-namespaces="], env=env).alert_webhook_namespaces == ()


def test_bad_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--metrics-port", "70000"], env={})
    assert "--metrics-port" in capsys.readouterr().err


def test_help_names_every_environment_variable() -> None:
    text = " ".join(build_parser({}).format_help().split())
    for flag in (
        "--namespaces",
        "--log-format",
        "--metrics-port",
        "--leader-election",
        "--workers",
    ):
        assert f"env {env_name(flag)}" in text
