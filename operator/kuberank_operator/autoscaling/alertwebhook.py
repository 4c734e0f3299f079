"""The Alertmanager webhook receiver: alerts from kuberank's rules become operator actions.

The same server answers Prometheus HTTP service discovery at `GET /targets` (same bearer
token): the metrics ports of every RerankerDeployment's pods with the labels the rules group
by, for Prometheus builds without kubernetes_sd (Debian's, for one).

Alertmanager posts its webhook payload (version 4) to `POST /alerts` with
`Authorization: Bearer <token>`; the token lives in a Secret. Without the right token the answer
is 401 and nothing happens. Each firing alert that carries `kuberank_action` is handed to the
actions (scale up/down, restart a pod); the actions apply the same bounds, cooldowns and rate
limits as the builtin evaluator, act only in the namespaces the admin allows, and act once per
alert, so repeated notifications change nothing. Resolved alerts and alerts that are not
kuberank's are acknowledged and ignored.

Alertmanager takes the answer for the whole notification: a 4xx drops every alert in it, a 5xx
retries every alert. So each alert is judged on its own and answered in `results`: a malformed
or refused alert never costs the others their action. Only a body that is not an Alertmanager
payload gets a 4xx (400 not JSON, 413 too large, 415 not a JSON media type, 422 not version 4);
a 503 asks for a retry only when an alert failed before changing anything and no alert of the
notification changed anything.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from kuberank_operator.autoscaling.alertpayloads import (
    AlertOutcome,
    AlertRequest,
    AlertResult,
    InvalidAlert,
    PayloadError,
    parse_payload,
)
from kuberank_operator.telemetry import metrics

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/alerts"
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


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


def _invalid_body(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason, "error_type": "Validation"}, status=status)


def _json_media_type(header: str | None) -> bool:
    """Whether a body of this Content-Type may be JSON: JSON types, and none named (absent, or
    application/octet-stream, what HTTP assumes when none is named)."""
    media = (header or "").partition(";")[0].strip().lower()
    return media in ("", "application/octet-stream", "application/json") or (
        media.startswith("application/") and media.endswith("+json")
    )


async def _read_payload(request: web.Request) -> tuple[Any, web.Response | None]:
    """The JSON body, or the 4xx answer for a body that is not JSON (400, 413, 415)."""
    if not _json_media_type(request.headers.get("Content-Type")):
        return None, _invalid_body(415, "the body must be application/json")
    try:
        return await request.json(), None
    except web.HTTPRequestEntityTooLarge:
        return None, _invalid_body(413, f"the body is over {MAX_PAYLOAD_BYTES} bytes")
    except (ValueError, RecursionError):
        # ValueError: bad UTF-8 or bad JSON; RecursionError: JSON nested too deep.
        return None, _invalid_body(400, "the body is not JSON")


async def _outcome(actions: AlertActions, alert: AlertRequest) -> AlertOutcome:
    if alert.status == "resolved" or alert.action == "none":
        return AlertOutcome(AlertResult.IGNORED, f"{alert.status} {alert.action}")
    try:
        outcome = await actions.act(alert)
    except Exception:
        # One alert's failure must not fail the others of the notification.
        log.exception(
            "alert webhook: %s for %s/%s failed", alert.alertname, alert.namespace, alert.name
        )
        outcome = AlertOutcome(
            AlertResult.FAILED, "internal error (see the operator's log)", retry=True
        )
    metrics.ALERTS.labels(alert.action, outcome.result.value).inc()
    return outcome


_NOTEWORTHY = frozenset({AlertResult.REFUSED, AlertResult.INVALID, AlertResult.FAILED})


def _report(index: int, item: AlertRequest | InvalidAlert, outcome: AlertOutcome) -> dict[str, Any]:
    """One alert's entry in the response, logged in one line."""
    level = logging.WARNING if outcome.result in _NOTEWORTHY else logging.INFO
    entry: dict[str, Any] = {"index": index, "alertname": item.alertname}
    if isinstance(item, InvalidAlert):
        log.log(level, "alert webhook: alerts[%d] %s: %s", index, item.alertname, outcome)
    else:
        pod = f" pod {item.pod}" if item.pod else ""
        where = f"{item.namespace}/{item.name}{pod}"
        log.log(
            level, "alert webhook: %s %s for %s: %s", item.alertname, item.status, where, outcome
        )
        entry |= {"namespace": item.namespace, "rerankerdeployment": item.name,
                  "fingerprint": item.fingerprint}  # fmt: skip
    return entry | {"result": outcome.result.value, "outcome": str(outcome)}


async def receive_alerts(request: web.Request) -> web.Response:
    refusal = await _refusal(request)
    if refusal is not None:
        return refusal
    payload, refused = await _read_payload(request)
    if refused is not None:
        return refused
    try:
        items = parse_payload(payload)
    except PayloadError as exc:
        return _invalid_body(422, str(exc))
    actions = request.app[ACTIONS_KEY]
    outcomes: list[AlertOutcome] = []
    results: list[dict[str, Any]] = []
    for index, item in items:
        if isinstance(item, InvalidAlert):
            outcome = AlertOutcome(AlertResult.INVALID, item.error)
            metrics.ALERTS.labels(item.action, outcome.result.value).inc()
        else:
            outcome = await _outcome(actions, item)
        outcomes.append(outcome)
        results.append(_report(index, item, outcome))
    # A retry re-sends every alert: ask for one only when nothing of this notification changed
    # anything (acted alerts are remembered, so a retry would not act twice, but never risk it).
    if any(o.retry for o in outcomes) and not any(o.result is AlertResult.ACTED for o in outcomes):
        error = "an alert failed before it changed anything; send the notification again"
        body = {"error": error, "error_type": "Unavailable", "results": results}
        return web.json_response(body, status=503)
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
