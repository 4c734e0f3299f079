"""The Alertmanager webhook receiver: alerts from kuberank's rules become operator actions.

The same server answers Prometheus HTTP service discovery at `GET /targets` (same bearer
token): the metrics ports of every RerankerDeployment's pods with the labels the rules group
by, for Prometheus builds without kubernetes_sd (Debian's, for one).

Alertmanager posts its webhook payload (version 4) to `POST /alerts` with
`Authorization: Bearer <token>`; the token lives in a Secret. Without the right token the answer
is 401 and nothing happens. Each firing alert that carries `kuberank_action` is handed to the
actions (scale up/down, restart a pod); the actions apply the same bounds, cooldowns and rate
limits as the builtin evaluator, so repeated notifications change nothing. Resolved alerts and
alerts that are not kuberank's are acknowledged and ignored.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from aiohttp import web

from kuberank_operator.rendering.alertrules import (
    ACTION_LABEL,
    CR_LABEL,
    NAMESPACE_LABEL,
    POD_LABEL,
)

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/alerts"
SUPPORTED_VERSION = "4"
ACTIONS = ("scale-up", "scale-down", "restart-pod", "none")
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024

AlertAction = Literal["scale-up", "scale-down", "restart-pod", "none"]


class PayloadError(ValueError):
    """A webhook body that is not an Alertmanager version 4 payload."""


@dataclass(frozen=True)
class AlertRequest:
    """One kuberank alert from an Alertmanager notification."""

    alertname: str
    action: AlertAction
    status: Literal["firing", "resolved"]
    namespace: str
    name: str
    pod: str | None
    fingerprint: str
    starts_at: str
    summary: str


def parse_payload(payload: Any) -> list[AlertRequest]:
    """The kuberank alerts of a payload; alerts without `kuberank_action` are not ours."""
    if not isinstance(payload, Mapping):
        raise PayloadError("the body must be a JSON object (Alertmanager webhook payload)")
    version = str(payload.get("version", ""))
    if version != SUPPORTED_VERSION:
        raise PayloadError(
            f"payload version is {version!r}; this receiver reads Alertmanager's version "
            f"{SUPPORTED_VERSION}"
        )
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("payload.alerts must be a list")
    requests: list[AlertRequest] = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, Mapping) or not isinstance(alert.get("labels"), Mapping):
            raise PayloadError(f"payload.alerts[{i}] must be an object with labels")
        labels: Mapping[str, Any] = alert["labels"]
        action = labels.get(ACTION_LABEL)
        if action is None:
            continue
        if action not in ACTIONS:
            raise PayloadError(
                f"payload.alerts[{i}].labels.{ACTION_LABEL} is {action!r}; "
                f"expected one of {', '.join(ACTIONS)}"
            )
        status = alert.get("status")
        if status not in ("firing", "resolved"):
            raise PayloadError(f"payload.alerts[{i}].status must be firing or resolved")
        annotations = alert.get("annotations")
        summary = annotations.get("summary", "") if isinstance(annotations, Mapping) else ""
        pod = labels.get(POD_LABEL)
        requests.append(
            AlertRequest(
                alertname=str(labels.get("alertname", "")),
                action=action,
                status=status,
                namespace=str(labels.get(NAMESPACE_LABEL, "")),
                name=str(labels.get(CR_LABEL, "")),
                pod=str(pod) if pod else None,
                fingerprint=str(alert.get("fingerprint", "")),
                starts_at=str(alert.get("startsAt", "")),
                summary=str(summary),
            )
        )
    return requests


class AlertResult(StrEnum):
    """What became of one alert (the `outcome` label of kuberank_operator_alerts_total)."""

    ACTED = "acted"
    UNCHANGED = "unchanged"
    IGNORED = "ignored"


@dataclass(frozen=True)
class AlertOutcome:
    result: AlertResult
    detail: str

    def __str__(self) -> str:
        """As the webhook's response says it: "acted: scaled 1 -> 2"."""
        return f"{self.result.value}: {self.detail}"


class AlertActions(Protocol):
    """Carries out one firing alert; returns what became of it."""

    async def act(self, alert: AlertRequest) -> AlertOutcome: ...


class TokenSource:
    """The expected bearer token, read through `read` and cached for `ttl_s` seconds.

    A rotated Secret takes effect within ttl_s; a wrong token triggers an early re-read (at most
    once per `refresh_s`), so a client with the new token is not turned away for long.
    """

    def __init__(
        self,
        read: Callable[[], Awaitable[str | None]],
        *,
        ttl_s: float = 60.0,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._refresh_s = refresh_s
        self._clock = clock
        self._token: str | None = None
        self._read_at: float | None = None

    async def _current(self, *, force: bool) -> str | None:
        now = self._clock()
        age = None if self._read_at is None else now - self._read_at
        if age is None or age >= self._ttl_s or (force and age >= self._refresh_s):
            self._token = await self._read()
            self._read_at = now
        return self._token

    async def matches(self, presented: str) -> bool:
        """Whether `presented` is the token (compared in constant time)."""
        for force in (False, True):
            expected = await self._current(force=force)
            if expected and hmac.compare_digest(presented.encode(), expected.encode()):
                return True
        return False


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _unauthorized(reason: str) -> web.Response:
    return web.json_response(
        {"error": reason, "error_type": "Unauthorized"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="kuberank-alerts"'},
    )


ACTIONS_KEY = web.AppKey("actions", AlertActions)
TOKEN_KEY = web.AppKey("token_source", TokenSource)
TargetsSource = Callable[[], list[dict[str, Any]]]
TARGETS_KEY: web.AppKey[TargetsSource] = web.AppKey("targets")
TARGETS_PATH = "/targets"


async def _refusal(request: web.Request) -> web.Response | None:
    """401 unless the request carries the token."""
    token = bearer_token(request)
    if token is None:
        log.warning("%s: request from %s without a bearer token", request.path, request.remote)
        return _unauthorized("missing bearer token")
    if not await request.app[TOKEN_KEY].matches(token):
        log.warning("%s: request from %s with a wrong bearer token", request.path, request.remote)
        return _unauthorized("wrong bearer token")
    return None


async def discovery_targets(request: web.Request) -> web.Response:
    refusal = await _refusal(request)
    if refusal is not None:
        return refusal
    return web.json_response(request.app[TARGETS_KEY]())


async def receive_alerts(request: web.Request) -> web.Response:
    refusal = await _refusal(request)
    if refusal is not None:
        return refusal
    try:
        payload = await request.json()
    except ValueError:
        return web.json_response(
            {"error": "the body is not JSON", "error_type": "Validation"}, status=400
        )
    try:
        alerts = parse_payload(payload)
    except PayloadError as exc:
        return web.json_response({"error": str(exc), "error_type": "Validation"}, status=422)
    actions = request.app[ACTIONS_KEY]
    results: list[dict[str, str]] = []
    for alert in alerts:
        if alert.status == "resolved" or alert.action == "none":
            outcome = AlertOutcome(AlertResult.IGNORED, f"{alert.status} {alert.action}")
        else:
            outcome = await actions.act(alert)
        log.info(
            "alert webhook: %s %s for %s/%s%s: %s",
            alert.alertname,
            alert.status,
            alert.namespace,
            alert.name,
            f" pod {alert.pod}" if alert.pod else "",
            outcome,
        )
        results.append({"alertname": alert.alertname, "outcome": str(outcome)})
    return web.json_response({"results": results})


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(
    *,
    actions: AlertActions,
    token_source: TokenSource,
    targets: TargetsSource = list,
) -> web.Application:
    """The receiver application: POST /alerts, GET /targets, GET /healthz."""
    app = web.Application(client_max_size=MAX_PAYLOAD_BYTES)
    app[ACTIONS_KEY] = actions
    app[TOKEN_KEY] = token_source
    app[TARGETS_KEY] = targets
    app.router.add_post(WEBHOOK_PATH, receive_alerts)
    app.router.add_get(TARGETS_PATH, discovery_targets)
    app.router.add_get("/healthz", healthz)
    return app


async def start_server(app: web.Application, *, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns the runner (to clean up) and the bound port (port 0 picks one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host=host, port=port)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return runner, bound
