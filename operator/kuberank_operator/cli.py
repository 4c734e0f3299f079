"""Command line of kuberank-operator. Every --foo-bar flag also reads env KUBERANK_FOO_BAR."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from kuberank_operator.settings import OperatorConfig

T = TypeVar("T")
ENV_PREFIX = "KUBERANK_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """A flag or environment value that cannot be used; the message names it and the fix."""


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def _from_env(env: Mapping[str, str], flag: str, default: T, parse: Callable[[str], T]) -> T:
    raw = env.get(env_name(flag))
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{env_name(flag)}={raw!r} is not valid for {flag}: {exc}") from None


def parse_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("use true or false")


def parse_namespaces(raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port, 0 to 65535 (0 picks a free one)")
    return value


def _resync(raw: str) -> float:
    value = float(raw)
    if value < 10:
        raise ValueError("must be at least 10 seconds")
    return value


def _lease_seconds(raw: str) -> int:
    value = int(raw)
    if not 3 <= value <= 300:
        raise ValueError("must be 3 to 300 seconds")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"choose one of {', '.join(choices)}")
        return raw

    return parse


def _arg_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    def convert(raw: str) -> T:
        try:
            return parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    d = OperatorConfig()
    p = argparse.ArgumentParser(
        prog="kuberank-operator",
        description=(
            "Run the kuberank operator: turns each RerankerDeployment (kuberank.dev/v1alpha1) "
            "into one inference pod per GPU or MIG slice, with a Service, a "
            "PodDisruptionBudget, status conditions and Events. Every --foo-bar flag can also "
            "be set with the environment variable KUBERANK_FOO_BAR; a flag wins over the "
            "environment."
        ),
    )

    def add(flag: str, default: T, parse: Callable[[str], T], help_: str, **kw: object) -> None:
        value = _from_env(env, flag, default, parse)
        p.add_argument(
            flag,
            default=value,
            type=_arg_type(parse),
            help=f"{help_} [env {env_name(flag)}; default: {default!r}]",
            **kw,  # type: ignore[arg-type]
        )

    add(
        "--namespaces",
        d.namespaces,
        parse_namespaces,
        "comma-separated namespaces to watch; empty watches all namespaces (cluster-wide). "
        "Capacity counting sees only pods in watched namespaces",
        metavar="NS[,NS...]",
    )
    add(
        "--kubeconfig",
        d.kubeconfig,
        str,
        "kubeconfig file; default: the pod's service account in a cluster, else $KUBECONFIG "
        "or ~/.kube/config",
        metavar="PATH",
    )
    add("--log-format", d.log_format, _choice("json", "text"), "log lines as json or text")
    add(
        "--log-level",
        d.log_level,
        _choice("debug", "info", "warning", "error"),
        "least severe log level printed",
    )
    add(
        "--metrics-host",
        d.metrics_host,
        str,
        "address of the HTTP endpoint serving /metrics, /healthz and /readyz",
    )
    add(
        "--metrics-port",
        d.metrics_port,
        _port,
        "port of the HTTP endpoint serving /metrics, /healthz and /readyz",
    )
    add(
        "--workers",
        d.workers,
        _positive_int,
        "reconciles that run at once (different RerankerDeployments)",
    )
    add(
        "--api-threads",
        d.api_threads,
        _positive_int,
        "threads (and pooled connections) for requests to the Kubernetes API",
    )
    add(
        "--resync-seconds",
        d.resync_seconds,
        _resync,
        "how often every RerankerDeployment is re-applied even when nothing changed, "
        "correcting edits to its objects that the index cannot see",
    )
    add(
        "--leader-election",
        d.leader_election,
        parse_bool,
        "run as one of several replicas: only the holder of a coordination.k8s.io Lease "
        "reconciles, scales and restarts pods; the others keep their caches warm and take "
        "over within --leader-election-seconds when it stops. Off: this process acts alone",
        metavar="BOOL",
    )
    add(
        "--leader-election-namespace",
        env.get("POD_NAMESPACE") or d.leader_election_namespace,
        str,
        "namespace of the Lease (default: $POD_NAMESPACE, the operator's own namespace)",
        metavar="NS",
    )
    add(
        "--leader-election-lease",
        d.leader_election_lease,
        str,
        "name of the Lease the replicas share",
        metavar="NAME",
    )
    add(
        "--leader-election-seconds",
        d.leader_election_seconds,
        _lease_seconds,
        "Lease duration: a leader that stops renewing is replaced after this long",
        metavar="SECONDS",
    )
    add(
        "--sidecar-pod-resources",
        d.sidecar_pod_resources,
        parse_bool,
        "mount the kubelet pod-resources socket (hostPath) into each GPU sidecar so it "
        "resolves its device exactly; otherwise it reads the inference container's handshake",
        metavar="BOOL",
    )
    add(
        "--builtin-evaluator",
        d.builtin_evaluator,
        parse_bool,
        "scrape every RerankerDeployment's pods each spec.autoscaling.intervalSeconds and "
        "scale / restart pods on its thresholds (no Prometheus needed); false leaves the "
        "decisions to Alertmanager's webhook alone",
        metavar="BOOL",
    )
    add(
        "--alert-webhook",
        d.alert_webhook,
        parse_bool,
        "serve the Alertmanager webhook receiver (POST /alerts, bearer token) that scales and "
        "restarts pods on kuberank alerts for resources with spec.monitoring.alertWebhook",
        metavar="BOOL",
    )
    add("--alert-webhook-host", d.alert_webhook_host, str, "address of the webhook receiver")
    add("--alert-webhook-port", d.alert_webhook_port, _port, "port of the webhook receiver")
    add(
        "--alert-webhook-token-secret",
        d.alert_webhook_token_secret,
        str,
        "Secret holding the bearer token Alertmanager must send, as NAMESPACE/NAME; "
        "required with --alert-webhook (re-read within a minute when it changes)",
        metavar="NS/NAME",
    )
    add(
        "--alert-webhook-token-key",
        d.alert_webhook_token_key,
        str,
        "key of the token inside that Secret",
    )
    add(
        "--runbook-base-url",
        d.runbook_base_url,
        str,
        "base URL of docs/runbooks, linked from every alert of the rendered PrometheusRules",
        metavar="URL",
    )
    p.add_argument("--version", action="version", version="%(prog)s 0.1.0")
    return p


def parse_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> OperatorConfig:
    try:
        parser = build_parser(env)
    except ConfigError as exc:
        raise SystemExit(f"kuberank-operator: error: {exc}") from None
    args = parser.parse_args(argv)
    if args.alert_webhook and "/" not in args.alert_webhook_token_secret.strip("/"):
        parser.error(
            "--alert-webhook needs --alert-webhook-token-secret NAMESPACE/NAME: the Secret "
            "with the bearer token Alertmanager sends (requests without it get 401)"
        )
    return OperatorConfig(
        namespaces=tuple(args.namespaces),
        kubeconfig=args.kubeconfig or None,
        log_format=args.log_format,
        log_level=args.log_level,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        workers=args.workers,
        api_threads=args.api_threads,
        resync_seconds=args.resync_seconds,
        leader_election=args.leader_election,
        leader_election_namespace=args.leader_election_namespace,
        leader_election_lease=args.leader_election_lease,
        leader_election_seconds=args.leader_election_seconds,
        sidecar_pod_resources=args.sidecar_pod_resources,
        builtin_evaluator=args.builtin_evaluator,
        alert_webhook=args.alert_webhook,
        alert_webhook_host=args.alert_webhook_host,
        alert_webhook_port=args.alert_webhook_port,
        alert_webhook_token_secret=args.alert_webhook_token_secret,
        alert_webhook_token_key=args.alert_webhook_token_key,
        runbook_base_url=args.runbook_base_url,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    if config.kubeconfig:
        # kopf's login reads $KUBECONFIG; both API clients then use the same credentials.
        os.environ["KUBECONFIG"] = config.kubeconfig
    # Imported late: --help and bad flags answer without loading kopf and the kubernetes client.
    from kuberank_operator import handlers, running

    running.run(config, registry=handlers.registry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
