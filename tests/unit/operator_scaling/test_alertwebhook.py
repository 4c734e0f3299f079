"""The Alertmanager webhook receiver, through aiohttp's test client."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from kuberank_operator.autoscaling.alertpayloads import (
    AlertOutcome,
    AlertRequest,
    AlertResult,
    InvalidAlert,
    PayloadError,
    parse_payload,
)
from kuberank_operator.autoscaling.alertwebhook import TokenSource, build_app
from kuberank_operator.telemetry.metrics import REGISTRY

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
TOKEN = "s3cret-token"


class Did(AlertOutcome):
    def __str__(self) -> str:
        return self.detail


class RecordingActions:
    def __init__(self) -> None:
        self.seen: list[AlertRequest] = []

    async def act(self, alert: AlertRequest) -> AlertOutcome:
        self.seen.append(alert)
        return Did(AlertResult.ACTED, f"did {alert.action}")


def alert(
    *, status: str = "firing", action: str | None = "scale-up", name: str = "bge", **labels: str
) -> dict[str, Any]:
    all_labels = {
        "alertname": "KuberankQueueBacklog",
        "namespace": "search",
        "rerankerdeployment": name,
        **labels,
    }
    if action is not None:
        all_labels["kuberank_action"] = action
    return {
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": "Pairs queue up"},
        "startsAt": "2026-11-22T14:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": "abc123",
    }


def payload(*alerts: Any) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="KuberankQueueBacklog"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "kuberank",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }


class Secret:
    def __init__(self, value: str | None) -> None:
        self.value = value
        self.reads = 0

    async def read(self) -> str | None:
        self.reads += 1
        return self.value


@pytest.fixture
async def setup(
    aiohttp_client: ClientFactory,
) -> tuple[TestClient[Any, Any], RecordingActions, Secret]:
    actions = RecordingActions()
    secret = Secret(TOKEN)
    app = build_app(actions=actions, token_source=TokenSource(secret.read, refresh_s=0))
    return await aiohttp_client(app), actions, secret


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_no_token_is_401_and_acts_on_nothing(
    setup: tuple[TestClient[Any, Any], RecordingActions, Secret],
) -> None:
    client, actions, _ = setup
    response = await client.post("/alerts", json=payload(alert()))
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = await response.json()
    assert body["error_type"] == "Unauthorized"
    response = await client.post(
        "/alerts", json=payload(alert()), headers={"Authorization": "Bearer forged"}
    )
    assert response.status == 401
    response = await client.post(
        "/alerts", json=payload(alert()), headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert response.status == 401
    assert actions.seen == []


async def test_firing_kuberank_alerts_are_acted_on_resolved_and_foreign_ones_not(
    setup: tuple[TestClient[Any, Any], RecordingActions, Secret],
) -> None:
    client, actions, _ = setup
    body = payload(
        alert(),
        alert(status="resolved"),
        alert(action=None, alertname="NodeDown"),
        alert(action="restart-pod", pod="bge-abc", alertname="KuberankCudaOomRepeated"),
    )
    response = await client.post("/alerts", json=body, headers=AUTH)
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["outcome"] for r in results] == [
        "did scale-up",
        "ignored: resolved scale-up",
        "did restart-pod",
    ]
    assert [(a.action, a.namespace, a.name, a.pod) for a in actions.seen] == [
        ("scale-up", "search", "bge", None),
        ("restart-pod", "search", "bge", "bge-abc"),
    ]


async def test_bad_payloads_are_rejected_with_the_field(
    setup: tuple[TestClient[Any, Any], RecordingActions, Secret],
) -> None:
    client, actions, _ = setup
    response = await client.post("/alerts", data=b"not json", headers=AUTH)
    assert response.status == 400
    response = await client.post("/alerts", json={**payload(alert()), "version": "3"}, headers=AUTH)
    assert response.status == 422
    assert "version" in (await response.json())["error"]
    # One alert with an unknown action is answered on its own (a 4xx would make Alertmanager
    # drop the whole notification), still naming the field.
    response = await client.post("/alerts", json=payload(alert(action="explode")), headers=AUTH)
    assert response.status == 200
    (result,) = (await response.json())["results"]
    assert result["result"] == "invalid"
    assert "kuberank_action" in result["outcome"]
    assert actions.seen == []


async def test_a_rotated_secret_is_picked_up_on_the_next_request(
    setup: tuple[TestClient[Any, Any], RecordingActions, Secret],
) -> None:
    client, actions, secret = setup
    assert (await client.post("/alerts", json=payload(alert()), headers=AUTH)).status == 200
    secret.value = "rotated"
    new_auth = {"Authorization": "Bearer rotated"}
    assert (await client.post("/alerts", json=payload(alert()), headers=new_auth)).status == 200
    assert (await client.post("/alerts", json=payload(alert()), headers=AUTH)).status == 401
    assert len(actions.seen) == 2


async def test_a_missing_secret_turns_everyone_away(aiohttp_client: ClientFactory) -> None:
    actions = RecordingActions()
    app = build_app(actions=actions, token_source=TokenSource(Secret(None).read))
    client = await aiohttp_client(app)
    response = await client.post("/alerts", json=payload(alert()), headers=AUTH)
    assert response.status == 401
    empty = await client.post(
        "/alerts", json=payload(alert()), headers={"Authorization": "Bearer "}
    )
    assert empty.status == 401
    assert actions.seen == []


async def test_token_is_cached_between_requests() -> None:
    secret = Secret(TOKEN)
    now = [0.0]
    source = TokenSource(secret.read, ttl_s=60, refresh_s=5, clock=lambda: now[0])
    assert await source.matches(TOKEN)
    assert await source.matches(TOKEN)
    assert secret.reads == 1
    # A wrong token may force one early re-read, no more often than refresh_s.
    assert not await source.matches("nope")
    assert not await source.matches("nope")
    assert secret.reads == 1
    now[0] = 6
    assert not await source.matches("nope")
    assert secret.reads == 2


async def test_discovery_targets_need_the_token(aiohttp_client: ClientFactory) -> None:
    groups = [{"targets": ["127.0.0.9:8080"], "labels": {"pod": "p"}}]
    app = build_app(
        actions=RecordingActions(),
        token_source=TokenSource(Secret(TOKEN).read),
        targets=lambda: groups,
    )
    client = await aiohttp_client(app)
    assert (await client.get("/targets")).status == 401
    response = await client.get("/targets", headers=AUTH)
    assert response.status == 200
    assert await response.json() == groups


def test_parse_payload_requires_an_object() -> None:
    with pytest.raises(PayloadError, match="JSON object"):
        parse_payload([])
    # A malformed alert is invalid on its own, naming where it is; the payload is still read.
    ((index, invalid),) = parse_payload({"version": "4", "alerts": ["x"]})
    assert index == 0
    assert isinstance(invalid, InvalidAlert)
    assert "alerts[0]" in invalid.error


class FailingActions(RecordingActions):
    """Fails the alerts named in `fail`: retryably, or by raising (a bug in an action)."""

    def __init__(self, fail: dict[str, str]) -> None:
        super().__init__()
        self.fail = fail

    async def act(self, alert: AlertRequest) -> AlertOutcome:
        how = self.fail.get(alert.name)
        if how == "raise":
            raise RuntimeError("boom")
        if how == "retry":
            self.seen.append(alert)
            return AlertOutcome(AlertResult.FAILED, "API server unavailable", retry=True)
        return await super().act(alert)


async def test_one_bad_alert_does_not_cost_the_others_their_action(
    setup: tuple[TestClient[Any, Any], RecordingActions, Secret],
) -> None:
    """Alertmanager drops a whole notification on a 4xx: each alert is answered on its own."""
    client, actions, _ = setup
    no_pod = alert(action="restart-pod", alertname="KuberankCudaOomRepeated")
    unlabelled = {"status": "firing"}
    bad_status = {**alert(), "status": "pending"}
    body = payload(
        alert(),
        alert(action="explode"),
        "not an alert",
        unlabelled,
        no_pod,
        bad_status,
        alert(action=None, alertname="Watchdog"),
        alert(action="scale-down", name="other"),
    )
    response = await client.post("/alerts", json=body, headers=AUTH)
    assert response.status == 200
    results = (await response.json())["results"]
    assert [(r["index"], r["result"]) for r in results] == [
        (0, "acted"),
        (1, "invalid"),
        (2, "invalid"),
        (3, "invalid"),
        (4, "invalid"),
        (5, "invalid"),
        (7, "acted"),
    ]
    assert "alerts[2] must be an object with labels" in results[2]["outcome"]
    assert "lacks pod" in results[4]["outcome"]
    assert "status must be firing or resolved" in results[5]["outcome"]
    assert results[0]["fingerprint"] == "abc123"
    assert [(a.action, a.name) for a in actions.seen] == [
        ("scale-up", "bge"),
        ("scale-down", "other"),
    ]


async def test_bodies_that_are_no_alertmanager_payload_get_a_4xx(
    setup: tuple[TestClient[Any, Any], RecordingActions, Secret],
) -> None:
    client, actions, _ = setup
    as_text = {**AUTH, "Content-Type": "text/plain"}
    response = await client.post("/alerts", data=b'{"version": "4"}', headers=as_text)
    assert response.status == 415
    assert (await response.json())["error_type"] == "Validation"
    form = await client.post("/alerts", data={"version": "4"}, headers=AUTH)
    assert form.status == 415
    as_json = {**AUTH, "Content-Type": "application/json"}
    for bad in (b"[" * 100_000, b"\xff\xfe{}", b'{"version": "4", "alerts": [}'):
        response = await client.post("/alerts", data=bad, headers=as_json)
        assert response.status == 400, bad[:10]
        assert (await response.json())["error"] == "the body is not JSON"
    response = await client.post(
        "/alerts", data=io.BytesIO(b" " * (5 * 1024 * 1024)), headers=as_json
    )
    assert response.status == 413
    assert "bytes" in (await response.json())["error"]
    response = await client.post("/alerts", json={"version": "4", "alerts": {}}, headers=AUTH)
    assert response.status == 422
    assert "payload.alerts must be a list" in (await response.json())["error"]
    # A JSON media type with parameters, or a +json one, is JSON.
    vendor = {**AUTH, "Content-Type": "application/vnd.alertmanager+json; charset=utf-8"}
    response = await client.post("/alerts", data=json.dumps(payload(alert())), headers=vendor)
    assert response.status == 200
    assert len(actions.seen) == 1


async def test_a_retry_is_asked_for_only_when_nothing_of_the_notification_acted(
    aiohttp_client: ClientFactory,
) -> None:
    actions = FailingActions({"flaky": "retry", "buggy": "raise"})
    app = build_app(actions=actions, token_source=TokenSource(Secret(TOKEN).read))
    client = await aiohttp_client(app)
    # Nothing acted and one alert may succeed when sent again: 503, Alertmanager retries.
    response = await client.post(
        "/alerts", json=payload(alert(name="flaky"), alert(status="resolved")), headers=AUTH
    )
    assert response.status == 503
    body = await response.json()
    assert body["error_type"] == "Unavailable"
    assert [r["result"] for r in body["results"]] == ["failed", "ignored"]
    # Once an alert of the notification acted, never 5xx: a retry would re-send that one too.
    response = await client.post(
        "/alerts", json=payload(alert(name="flaky"), alert(name="bge")), headers=AUTH
    )
    assert response.status == 200
    assert [r["result"] for r in (await response.json())["results"]] == ["failed", "acted"]
    # An action that raises fails its alert only; the next alert still acts.
    response = await client.post(
        "/alerts", json=payload(alert(name="buggy"), alert(name="bge")), headers=AUTH
    )
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["result"] for r in results] == ["failed", "acted"]
    assert "internal error" in results[0]["outcome"]


async def test_every_alert_outcome_is_counted(
    setup: tuple[TestClient[Any, Any], RecordingActions, Secret],
) -> None:
    client, _, _ = setup

    def count(action: str, outcome: str) -> float:
        value = REGISTRY.get_sample_value(
            "kuberank_operator_alerts_total", {"action": action, "outcome": outcome}
        )
        return value or 0.0

    before = (
        count("scale-up", "acted"),
        count("unknown", "invalid"),
        count("restart-pod", "invalid"),
    )
    body = payload(
        alert(),
        alert(action="explode"),
        alert(action="restart-pod", alertname="KuberankCudaOomRepeated"),
        alert(status="resolved"),
    )
    assert (await client.post("/alerts", json=body, headers=AUTH)).status == 200
    after = (
        count("scale-up", "acted"),
        count("unknown", "invalid"),
        count("restart-pod", "invalid"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
