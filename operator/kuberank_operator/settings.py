"""The operator's settings: one typed model (pydantic-settings) that flags and environment fill.

Every field is the flag `--<name with dashes>` and the variable `KUBERANK_<NAME>`; the field
carries the default, the check and the help text once. cli.py reads the command line; the flag
wins over the variable, the variable over the default. A bad value is refused with one line
naming the flag or variable, the value and what is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from kuberank_operator.cluster.admission_source import configmap_ref
from kuberank_operator.model.specs import ACCELERATORS, SIDECAR_IMAGE, Accelerator, ImageSpec
from kuberank_operator.rendering.alertrules import DEFAULT_RUNBOOK_BASE_URL

ENV_PREFIX = "KUBERANK_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(flag: str) -> str:
    """KUBERANK_FOO_BAR for --foo-bar (or for the field foo_bar)."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def parse_bool(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("use true or false")


def parse_namespaces(raw: object) -> object:
    if isinstance(raw, str):
        return tuple(n.strip() for n in raw.split(",") if n.strip())
    return raw


def _namespace_names(value: tuple[str, ...]) -> tuple[str, ...]:
    bad = [n for n in value if n != "*" and not NAMESPACE_NAME.fullmatch(n)]
    if bad:
        raise ValueError(
            f"{bad[0]!r} is not a namespace name (lowercase letters, digits and '-', at most 63) "
            "or *"
        )
    return value


def _at_least_one(value: int) -> int:
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port, 0 to 65535 (0 picks a free one)")
    return value


def _resync(value: float) -> float:
    if value < 10:
        raise ValueError("must be at least 10 seconds")
    return value


def _lease_seconds(value: int) -> int:
    if not 3 <= value <= 300:
        raise ValueError("must be 3 to 300 seconds")
    return value


def _configmap_ref(value: str) -> str:
    configmap_ref(value)  # raises with the fix in its message
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"choose one of {', '.join(choices)}")
        return value

    return check


def _accelerator(value: object) -> object:
    if isinstance(value, str) and value not in ACCELERATORS:
        raise ValueError(f"choose one of {', '.join(ACCELERATORS)}")
    return value


Switch = Annotated[bool, BeforeValidator(parse_bool)]
Count = Annotated[int, AfterValidator(_at_least_one)]
Port = Annotated[int, AfterValidator(_port)]


class OperatorConfig(BaseSettings):
    """Every setting of kuberank-operator (frozen: the program runs with one)."""

    # Constructing it reads nothing by itself: cli.py passes the flags and the variables.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    namespaces: Annotated[tuple[str, ...], NoDecode, BeforeValidator(parse_namespaces)] = Field(
        default=(),
        description="comma-separated namespaces to watch; empty watches all namespaces "
        "(cluster-wide). Capacity counting sees only pods in watched namespaces",
    )
    kubeconfig: str | None = Field(
        default=None,
        description="kubeconfig file; default: the pod's service account in a cluster, else "
        "$KUBECONFIG or ~/.kube/config",
    )
    log_format: Annotated[str, AfterValidator(_choice("json", "text"))] = Field(
        default="json", description="log lines as json or text"
    )
    log_level: Annotated[str, AfterValidator(_choice("debug", "info", "warning", "error"))] = Field(
        default="info", description="least severe log level printed"
    )
    # The pod's probe and scrape port listens on every interface.
    metrics_host: str = Field(
        default="0.0.0.0",
        description="address of the HTTP endpoint serving /metrics, /healthz and /readyz",
    )
    metrics_port: Port = Field(
        default=8080, description="port of the HTTP endpoint serving /metrics, /healthz and /readyz"
    )
    workers: Count = Field(
        default=4, description="reconciles that run at once (different RerankerDeployments)"
    )
    api_threads: Count = Field(
        default=8, description="threads (and pooled connections) for requests to the Kubernetes API"
    )
    resync_seconds: Annotated[float, AfterValidator(_resync)] = Field(
        default=300.0,
        description="how often every RerankerDeployment is re-applied even when nothing changed, "
        "correcting edits to its objects that the index cannot see",
    )
    # Leader election on a Lease: off for one replica; with two or more, only the Lease holder
    # reconciles and acts, the others keep warm indexes and take over when it goes.
    leader_election: Switch = Field(
        default=False,
        description="run as one of several replicas: only the holder of a coordination.k8s.io "
        "Lease reconciles, scales and restarts pods; the others keep their caches warm and take "
        "over within --leader-election-seconds when it stops. Off: this process acts alone",
    )
    leader_election_namespace: str = Field(
        default="default",
        description="namespace of the Lease (default: $POD_NAMESPACE, the operator's own "
        "namespace)",
    )
    leader_election_lease: str = Field(
        default="kuberank-operator", description="name of the Lease the replicas share"
    )
    leader_election_seconds: Annotated[int, AfterValidator(_lease_seconds)] = Field(
        default=15,
        description="Lease duration: a leader that stops renewing is replaced after this long",
    )
    accelerator: Annotated[Accelerator, BeforeValidator(_accelerator)] = Field(
        default="nvidia",
        description="what inference pods compute on. nvidia: each pod requests one GPU or MIG "
        "slice (spec.gpu.resourceName) and its sidecar reads the card through NVML. none: for "
        "clusters without GPUs (kind, minikube): pods request no GPU, GPU nodeSelector labels "
        "and tolerations (nvidia.com/...) are dropped, the inference server runs the model on "
        "CPU and the sidecar plays one fake card (its fake NVML backend); everything else is as "
        "in production. Shown as status.accelerator (cpu) and in `kubectl get rrd`",
    )
    sidecar_pod_resources: Switch = Field(
        default=False,
        description="mount the kubelet pod-resources socket (hostPath) into each GPU sidecar so "
        "it resolves its device exactly; otherwise it reads the inference container's handshake",
    )
    # The trust boundary (docs/security.md): what a RerankerDeployment may ask for, and the image
    # of the sidecar, which no RerankerDeployment chooses.
    admission_configmap: Annotated[str, AfterValidator(_configmap_ref)] = Field(
        default="",
        description="ConfigMap holding the cluster admin's admission rules, as NAMESPACE/NAME "
        "(the chart's <release>-admission, also the params of its ValidatingAdmissionPolicy); "
        "re-read every 10 s. Empty: the built-in rules, which are the chart's defaults (no "
        "hostPath models, no GPU tuning, only the kuberank image, ClusterIP Services only)",
    )
    sidecar_image: str = Field(
        default=SIDECAR_IMAGE,
        description="image of every pod's telemetry and tuning sidecar: the operator's own "
        "image (the chart sets it); never taken from a RerankerDeployment",
    )
    sidecar_image_pull_policy: Annotated[
        str, AfterValidator(_choice("Always", "IfNotPresent", "Never"))
    ] = Field(default=ImageSpec().pull_policy, description="pull policy of the sidecar image")
    # Autoscaling and OOM restarts (autoscaling.responders): the builtin evaluator scrapes pods
    # and decides; the Alertmanager webhook receiver acts on kuberank alerts when enabled.
    builtin_evaluator: Switch = Field(
        default=True,
        description="scrape every RerankerDeployment's pods each spec.autoscaling.intervalSeconds "
        "and scale / restart pods on its thresholds (no Prometheus needed); false leaves the "
        "decisions to Alertmanager's webhook alone",
    )
    alert_webhook: Switch = Field(
        default=False,
        description="serve the Alertmanager webhook receiver (POST /alerts, bearer token) that "
        "scales and restarts pods on kuberank alerts for resources with "
        "spec.monitoring.alertWebhook",
    )
    alert_webhook_host: str = Field(
        default="0.0.0.0", description="address of the webhook receiver"
    )
    alert_webhook_port: Port = Field(default=8443, description="port of the webhook receiver")
    alert_webhook_token_secret: str = Field(
        default="",
        description="Secret holding the bearer token Alertmanager must send, as NAMESPACE/NAME; "
        "required with --alert-webhook (re-read within a minute when it changes)",
    )
    alert_webhook_token_key: str = Field(
        default="token", description="key of the token inside that Secret"
    )
    alert_webhook_namespaces: Annotated[
        tuple[str, ...],
        NoDecode,
        BeforeValidator(parse_namespaces),
        AfterValidator(_namespace_names),
    ] = Field(
        default=(),
        description="comma-separated namespaces whose RerankerDeployments webhook alerts may "
        "scale or restart; an alert naming another namespace is refused and changes nothing. "
        "Empty (or *): every namespace the operator watches",
    )
    runbook_base_url: str = Field(
        default=DEFAULT_RUNBOOK_BASE_URL,
        description="base URL of docs/runbooks, linked from every alert of the rendered "
        "PrometheusRules",
    )

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class _Environment(EnvSettingsSource):
    """The KUBERANK_* variables of one environment (the process's, unless given)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(OperatorConfig)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class SettingError(ValueError):
    """A flag or variable that cannot be used: names it, the value and what is accepted."""


def read_config(given: Mapping[str, object], environ: Mapping[str, str]) -> OperatorConfig:
    """Flags given (as text) over KUBERANK_* variables over the defaults."""
    from_env = _Environment(environ)()
    merged: dict[str, Any] = {**from_env, **given}
    if "leader_election_namespace" not in merged and environ.get("POD_NAMESPACE"):
        merged["leader_election_namespace"] = environ["POD_NAMESPACE"]
    try:
        return OperatorConfig(**merged)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        raise SettingError(_explain(problem, given=given, environ=environ)) from None


def _explain(problem: Any, *, given: Mapping[str, object], environ: Mapping[str, str]) -> str:
    field = str(problem["loc"][0])
    flag = flag_name(field)
    kind, ctx = problem["type"], problem.get("ctx") or {}
    if kind == "value_error":
        reason = str(ctx["error"])
    elif kind in ("int_parsing", "int_from_float"):
        reason = "must be a whole number"
    elif kind == "float_parsing":
        reason = "must be a number"
    else:
        reason = str(problem["msg"])
    if field in given:
        return f"{flag}={given[field]!r} is not valid: {reason}"
    variable = env_name(flag)
    return f"{variable}={environ.get(variable)!r} is not valid for {flag}: {reason}"
