"""The Alertmanager webhook receiver, through aiohttp's test client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from kuberank_operator.autoscaling.alertwebhook import (
    AlertOutcome,
    AlertRequest,
    AlertResult,
    PayloadError,
    TokenSource,
    build_app,
    parse_payload,
)

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


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
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
    response = await client.post("/alerts", json=payload(alert(action="explode")), headers=AUTH)
    assert response.status == 422
    assert "kuberank_action" in (await response.json())["error"]
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
    with pytest.raises(PayloadError, match=r"alerts\[0\]"):
        parse_payload({"version": "4", "alerts": ["x"]})
