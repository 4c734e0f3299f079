"""Alert to action (alerts.py) with the real actions and actuator over a fake API: the namespace
scope, and once per alert, also when a write after the scale step fails and Alertmanager sends
the notification again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from kuberank_operator.autoscaling.actions import Actions, ResourceState
from kuberank_operator.autoscaling.alertguards import (
    ActedAlerts,
    AlertIdentity,
    AlertScope,
)
from kuberank_operator.autoscaling.alertpayloads import AlertRequest
from kuberank_operator.autoscaling.alerts import AlertResponder
from kuberank_operator.autoscaling.alertwebhook import TokenSource, build_app
from kuberank_operator.cluster.actuator import Actuator
from kuberank_operator.cluster.kubeapi import ApiError
from kuberank_operator.model.indexes import Index, World
from kuberank_operator.model.naming import FIELD_MANAGER, Owner
from kuberank_operator.model.observations import PodSummary
from kuberank_operator.model.resources import Key, resource_view
from kuberank_operator.telemetry.metrics import REGISTRY

KEY: Key = ("search", "bge")
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


class FakeApi:
    """The writes the actuator makes, kept as an API server would: replicas and status; each
    write can be made to fail (`fail[what]`: the ApiError to raise once)."""

    def __init__(self, *, replicas: int, status: Mapping[str, Any] | None = None) -> None:
        self.replicas = replicas
        self.status: dict[str, Any] = dict(status or {})
        self.fail: dict[str, ApiError] = {}
        self.calls: list[tuple[str, Any]] = []

    def _maybe_fail(self, what: str) -> None:
        error = self.fail.pop(what, None)
        if error is not None:
            raise error

    async def patch_scale(
        self, *, namespace: str, name: str, from_replicas: int, to_replicas: int, manager: str
    ) -> None:
        if self.replicas != from_replicas:
            raise ApiError(422, "the replica test failed")
        # "scale-refused": the API server turns the request away and writes nothing.
        self._maybe_fail("scale-refused")
        self.replicas = to_replicas
        self.calls.append(("scale", (from_replicas, to_replicas)))
        # "scale-lost": the step is written, the answer never comes back.
        self._maybe_fail("scale-lost")

    async def apply_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any], manager: str
    ) -> None:
        self._maybe_fail("status")
        self.status.update(status)
        self.calls.append(("status", dict(status)))

    async def post_event(
        self, *, owner: Owner, type_: str, reason: str, message: str, action: str
    ) -> None:
        self._maybe_fail("event")
        self.calls.append(("event", reason))

    async def delete_pod(self, *, namespace: str, name: str) -> None:
        self._maybe_fail("delete")
        self.calls.append(("delete", name))

    async def apply(self, obj: Mapping[str, Any], *, manager: str = FIELD_MANAGER) -> bool:
        raise AssertionError("alerts apply nothing")

    async def delete_object(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> None:
        raise AssertionError("alerts delete no object")

    async def write_lease(self, body: Mapping[str, Any]) -> None:
        raise AssertionError("alerts write no Lease")

    def scales(self) -> list[Any]:
        return [args for what, args in self.calls if what == "scale"]


def body(api: FakeApi, *, namespace: str = KEY[0], cooldown: int = 0) -> dict[str, Any]:
    """The RerankerDeployment as the index would hold it after the API's writes."""
    return {
        "metadata": {"namespace": namespace, "name": KEY[1], "uid": "u1", "generation": 1},
        "spec": {
            "model": {"id": "m", "source": {"pvc": {"claimName": "models"}}},
            "replicas": api.replicas,
            "autoscaling": {
                "mode": "builtin",
                "minReplicas": 1,
                "maxReplicas": 5,
                "cooldownSeconds": cooldown,
            },
            "monitoring": {"alertWebhook": True},
        },
        "status": dict(api.status),
    }


def pod(name: str) -> PodSummary:
    return PodSummary(
        namespace=KEY[0],
        name=name,
        owner=KEY[1],
        node_name="n",
        phase="Running",
        ready=True,
        deleting=False,
        gpu_requests=(("nvidia.com/gpu", 1),),
        ip="127.0.0.9",
    )


class Setup:
    """A responder over the fake API; `refresh` puts the API's object into the index."""

    def __init__(
        self, api: FakeApi, *, scope: AlertScope, namespaces: tuple[str, ...] = (KEY[0],)
    ) -> None:
        self.api = api
        self.namespaces = namespaces
        self.indices: dict[str, dict[Any, list[Any]]] = {Index.RRD: {}, Index.POD: {}}
        self.states: dict[Key, ResourceState] = {}
        self.now = 1000.0
        self.responder = AlertResponder(
            world=World(self.indices),
            actions=Actions(actuator=Actuator(api), clock=lambda: self.now),
            state=lambda key: self.states.setdefault(key, ResourceState()),
            clock=lambda: self.now,
            scope=scope,
        )
        self.refresh()

    def refresh(self) -> None:
        for namespace in self.namespaces:
            view = resource_view(body(self.api, namespace=namespace))
            self.indices[Index.RRD][view.key] = [view]

    async def act(self, alert: AlertRequest) -> str:
        self.refresh()
        return str(await self.responder.act(alert))


def scale_up(
    *, namespace: str = KEY[0], fingerprint: str = "4a1b", starts_at: str = "2026-12-01T10:00:00Z"
) -> AlertRequest:
    return AlertRequest(
        alertname="KuberankQueueBacklog",
        action="scale-up",
        status="firing",
        namespace=namespace,
        name=KEY[1],
        pod=None,
        fingerprint=fingerprint,
        starts_at=starts_at,
        summary="Pairs queue up",
    )


# --- the namespace scope --------------------------------------------------------------------


def test_scope_is_the_allowed_namespaces_within_the_watched_ones() -> None:
    assert AlertScope.resolve(allowed=(), watched=()).allows("anything")
    assert AlertScope.resolve(allowed=("*",), watched=()).allows("anything")
    watched = AlertScope.resolve(allowed=(), watched=("a", "b"))
    assert (watched.allows("a"), watched.allows("c")) == (True, False)
    assert AlertScope.resolve(allowed=("*", "a"), watched=("a", "b")).allows("b")
    narrowed = AlertScope.resolve(allowed=("a", "c"), watched=("a", "b"))
    assert narrowed.namespaces == frozenset({"a"})
    listed = AlertScope.resolve(allowed=("a",), watched=())
    assert (listed.allows("a"), listed.allows("b")) == (True, False)
    assert str(AlertScope.resolve(allowed=("c",), watched=("a",))) == "no namespace"
    assert str(AlertScope(None)) == "every namespace"


async def test_an_alert_for_another_namespace_is_refused_and_changes_nothing() -> None:
    api = FakeApi(replicas=1)
    setup = Setup(api, scope=AlertScope(frozenset({"search"})), namespaces=("search", "team-b"))
    outcome = await setup.act(scale_up(namespace="team-b"))
    assert outcome == ("refused: namespace 'team-b' is outside --alert-webhook-namespaces (search)")
    # Refused before the resource is looked at: the same for one that does not exist.
    assert (await setup.act(scale_up(namespace="kube-system"))).startswith("refused:")
    assert api.calls == []
    assert setup.states == {}
    assert await setup.act(scale_up()) == "acted: scaled 1 -> 2"


# --- once per alert -------------------------------------------------------------------------


async def test_a_failed_status_write_after_the_scale_is_not_retried_into_a_second_step() -> None:
    api = FakeApi(replicas=1)
    setup = Setup(api, scope=AlertScope(None))
    api.fail["status"] = ApiError(500, "etcdserver: request timed out")
    assert await setup.act(scale_up()) == "acted: scaled 1 -> 2"
    assert api.replicas == 2
    assert "lastScale" not in api.status
    # Alertmanager sends the same alert again (no cooldown to hide behind: cooldownSeconds 0).
    again = await setup.act(scale_up())
    assert again.startswith("unchanged: already acted on this alert: KuberankQueueBacklog")
    assert "fingerprint 4a1b" in again
    assert api.scales() == [(1, 2)]
    # A new firing of the alert (a new startsAt) is a new alert: it may step again.
    assert await setup.act(scale_up(starts_at="2026-12-01T11:00:00Z")) == "acted: scaled 2 -> 3"


async def test_a_failed_event_after_the_scale_is_not_retried_into_a_second_step() -> None:
    api = FakeApi(replicas=1)
    setup = Setup(api, scope=AlertScope(None))
    api.fail["event"] = ApiError(0, "connection reset")
    assert await setup.act(scale_up()) == "acted: scaled 1 -> 2"
    assert api.status["lastScale"]["to"] == 2
    assert (await setup.act(scale_up())).startswith("unchanged: already acted")
    assert api.scales() == [(1, 2)]


async def test_the_acted_alert_survives_an_operator_restart_in_status() -> None:
    api = FakeApi(replicas=1)
    first = Setup(api, scope=AlertScope(None))
    assert await first.act(scale_up()) == "acted: scaled 1 -> 2"
    assert api.status["lastScale"]["alert"] == {
        "name": "KuberankQueueBacklog",
        "fingerprint": "4a1b",
        "startsAt": "2026-12-01T10:00:00Z",
    }
    restarted = Setup(api, scope=AlertScope(None))
    assert (await restarted.act(scale_up())).startswith("unchanged: already acted")
    assert api.scales() == [(1, 2)]


async def test_a_scale_whose_answer_was_lost_is_not_sent_twice() -> None:
    api = FakeApi(replicas=1)
    setup = Setup(api, scope=AlertScope(None))
    api.fail["scale-lost"] = ApiError(0, "timed out")
    outcome = await setup.responder.act(scale_up())
    assert outcome.result == "failed"
    assert not outcome.retry
    assert "the step may have been written" in outcome.detail
    assert api.replicas == 2
    assert (await setup.act(scale_up())).startswith("unchanged: already acted")
    assert api.scales() == [(1, 2)]


async def test_a_scale_the_api_server_refused_may_be_retried() -> None:
    api = FakeApi(replicas=1)
    setup = Setup(api, scope=AlertScope(None))
    api.fail["scale-refused"] = ApiError(429, "too many requests")
    outcome = await setup.responder.act(scale_up())
    assert (outcome.result, outcome.retry) == ("failed", True)
    assert api.replicas == 1
    assert await setup.act(scale_up()) == "acted: scaled 1 -> 2"


async def test_a_restart_whose_status_write_fails_is_not_repeated() -> None:
    api = FakeApi(replicas=2)
    setup = Setup(api, scope=AlertScope(None))
    setup.indices[Index.POD][KEY] = [pod("bge-a"), pod("bge-b")]
    api.fail["status"] = ApiError(503, "unavailable")
    restart = AlertRequest(
        alertname="KuberankCudaOomRepeated",
        action="restart-pod",
        status="firing",
        namespace=KEY[0],
        name=KEY[1],
        pod="bge-a",
        fingerprint="77",
        starts_at="2026-12-01T10:00:00Z",
        summary="CUDA OOMs",
    )
    assert await setup.act(restart) == "acted: restarted pod bge-a"
    # The index has not yet seen the pod go: the alert's identity still keeps it to one delete.
    assert (await setup.act(restart)).startswith("unchanged: already acted")
    assert [a for w, a in api.calls if w == "delete"] == ["bge-a"]


def test_acted_alerts_are_bounded() -> None:
    acted = ActedAlerts(keep=2)
    one, two, three = (AlertIdentity("A", str(i), "t") for i in range(3))
    for identity in (one, two, three):
        acted.add(identity)
    assert (one in acted, two in acted, three in acted, len(acted)) == (False, True, True, 2)
    assert AlertIdentity.from_status({"name": "A", "startsAt": "t"}) is None
    assert AlertIdentity.from_status("x") is None
    assert AlertIdentity.from_status(one.to_status()) == one


# --- through the receiver -------------------------------------------------------------------


def _notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "kuberank", "alerts": list(alerts)}


def _alert(namespace: str, *, action: str = "scale-up") -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {
            "alertname": "KuberankQueueBacklog",
            "kuberank_action": action,
            "namespace": namespace,
            "rerankerdeployment": KEY[1],
        },
        "annotations": {"summary": "Pairs queue up"},
        "startsAt": "2026-12-01T10:00:00Z",
        "fingerprint": f"fp-{namespace}-{action}",
    }


@pytest.fixture
def refused_count() -> Callable[[], float]:
    def count() -> float:
        labels = {"action": "scale-up", "outcome": "refused"}
        return REGISTRY.get_sample_value("kuberank_operator_alerts_total", labels) or 0.0

    return count


async def test_a_notification_with_a_bad_and_a_foreign_alert_still_scales_once(
    aiohttp_client: ClientFactory, refused_count: Callable[[], float]
) -> None:
    api = FakeApi(replicas=1)
    setup = Setup(api, scope=AlertScope(frozenset({"search"})), namespaces=("search", "team-b"))

    async def token() -> str:
        return "t"

    app = build_app(actions=setup.responder, token_source=TokenSource(token))
    client = await aiohttp_client(app)
    auth = {"Authorization": "Bearer t"}
    notification = _notification(
        _alert("team-b"), _alert("search", action="explode"), _alert("search")
    )
    refused_before = refused_count()
    api.fail["status"] = ApiError(500, "etcd down")
    response = await client.post("/alerts", json=notification, headers=auth)
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["result"] for r in results] == ["refused", "invalid", "acted"]
    assert refused_count() - refused_before == 1
    # Alertmanager sends the whole notification again: nothing more changes, still 200.
    setup.refresh()
    response = await client.post("/alerts", json=notification, headers=auth)
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["result"] for r in results] == ["refused", "invalid", "unchanged"]
    assert api.scales() == [(1, 2)]
    assert refused_count() - refused_before == 2
