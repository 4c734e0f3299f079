"""Command line of kuberank-operator. Every --foo-bar flag also reads env KUBERANK_FOO_BAR.

The flags are built from the settings model (settings.OperatorConfig): its fields hold each
default, check and help text. A flag wins over its variable, the variable over the default; a
bad value exits with status 2 and one line naming the flag or variable, the value and what is
accepted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from kuberank_operator.settings import (
    OperatorConfig,
    SettingError,
    env_name,
    flag_name,
    read_config,
)

__all__ = ["build_parser", "env_name", "main", "parse_config"]

PROG = "kuberank-operator"
EXIT_USAGE = 2
METAVARS = {
    "namespaces": "NS[,NS...]",
    "kubeconfig": "PATH",
    "leader_election": "BOOL",
    "leader_election_namespace": "NS",
    "leader_election_lease": "NAME",
    "leader_election_seconds": "SECONDS",
    "sidecar_pod_resources": "BOOL",
    "builtin_evaluator": "BOOL",
    "alert_webhook": "BOOL",
    "alert_webhook_token_secret": "NS/NAME",
    "alert_webhook_namespaces": "NS[,NS...]",
    "runbook_base_url": "URL",
}


class BadSetting(SystemExit):
    """Exit status 2; str() is the one line that names the setting, its value and the limit."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message

    def __str__(self) -> str:
        return self.message


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The flags of OperatorConfig; only flags given reach the namespace (as text)."""
    env = os.environ if env is None else env
    defaults = OperatorConfig()
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Run the kuberank operator: turns each RerankerDeployment (kuberank.dev/v1alpha1) "
            "into one inference pod per GPU or MIG slice, with a Service, a "
            "PodDisruptionBudget, status conditions and Events. Every --foo-bar flag can also "
            "be set with the environment variable KUBERANK_FOO_BAR; a flag wins over the "
            "environment."
        ),
        argument_default=argparse.SUPPRESS,
    )
    for field, spec in OperatorConfig.model_fields.items():
        flag = flag_name(field)
        default = getattr(defaults, field)
        if field == "leader_election_namespace":
            default = env.get("POD_NAMESPACE") or default
        extra = {"metavar": METAVARS[field]} if field in METAVARS else {}
        p.add_argument(
            flag,
            dest=field,
            help=f"{spec.description} [env {env_name(flag)}; default: {default!r}]".replace(
                "%", "%%"
            ),
            **extra,  # type: ignore[arg-type]
        )
    p.add_argument("--version", action="version", version="%(prog)s 0.1.0")
    return p


def parse_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> OperatorConfig:
    env = os.environ if env is None else env
    parser = build_parser(env)
    given = vars(parser.parse_args(argv))
    try:
        config = read_config(given, env)
    except SettingError as exc:
        line = f"{PROG}: error: {exc}"
        print(line, file=sys.stderr)
        raise BadSetting(line) from None
    if config.alert_webhook and "/" not in config.alert_webhook_token_secret.strip("/"):
        parser.error(
            "--alert-webhook needs --alert-webhook-token-secret NAMESPACE/NAME: the Secret "
            "with the bearer token Alertmanager sends (requests without it get 401)"
        )
    if config.kubeconfig == "":
        config = config.model_copy(update={"kubeconfig": None})
    return config


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
