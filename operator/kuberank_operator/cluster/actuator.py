"""The one way the operator changes the cluster, each change answered with a typed outcome.

Rendered objects are applied and deleted, RerankerDeployments scaled, pods restarted, status
written (server-side apply on the status subresource, as the writer's own field manager, so each
status field has one owner: model.naming.StatusWriter), Leases written and Events posted, all
here. The API server's answers become outcomes (outcomes.py) in this one place: a 404 is `Gone`,
a failed replica test or a Lease written first is `Conflict`. Errors a caller cannot act on
(no answer, server errors) still raise ApiError, so the loops retry them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from kuberank_operator.cluster.kubeapi import ApiError
from kuberank_operator.cluster.outcomes import (
    Applied,
    Deleted,
    LeaseWritten,
    Refusal,
    Refused,
    Restarted,
    Scaled,
    StatusWritten,
)
from kuberank_operator.model.naming import FIELD_MANAGER, Owner, StatusWriter


class ClusterApi(Protocol):
    """The writes of the Kubernetes API adapter (kubeapi.KubeApi) the actuator uses."""

    async def apply(self, obj: Mapping[str, Any], *, manager: str = FIELD_MANAGER) -> bool: ...

    async def apply_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any], manager: str
    ) -> None: ...

    async def patch_scale(
        self, *, namespace: str, name: str, from_replicas: int, to_replicas: int, manager: str
    ) -> None: ...

    async def delete_pod(self, *, namespace: str, name: str) -> None: ...

    async def delete_object(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> None: ...

    async def write_lease(self, body: Mapping[str, Any]) -> None: ...

    async def post_event(
        self, *, owner: Owner, type_: str, reason: str, message: str, action: str
    ) -> None: ...


def _gone(exc: ApiError) -> Refused:
    return Refused(cause=Refusal.GONE, message=exc.message)


class Actuator:
    def __init__(self, api: ClusterApi) -> None:
        self._api = api

    async def apply(self, obj: Mapping[str, Any]) -> Applied | Refused:
        """Server-side apply of a rendered object; any refusal is an outcome (the reconciler
        reports it in status and tries again)."""
        kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
        try:
            created = await self._api.apply(obj)
        except ApiError as exc:
            cause = Refusal.GONE if exc.status == 404 else Refusal.REJECTED
            return Refused(cause=cause, message=exc.message)
        return Applied(kind=kind, name=name, created=created)

    async def delete(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> Deleted | Refused:
        try:
            await self._api.delete_object(
                api_version=api_version, kind=kind, namespace=namespace, name=name
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            return _gone(exc)
        return Deleted(kind=kind, name=name)

    async def scale(
        self, *, owner: Owner, from_replicas: int, to_replicas: int
    ) -> Scaled | Refused:
        """Replicas through the scale subresource, only if still `from_replicas` (a person's
        concurrent change wins: Conflict)."""
        try:
            await self._api.patch_scale(
                namespace=owner.namespace,
                name=owner.name,
                from_replicas=from_replicas,
                to_replicas=to_replicas,
                manager=StatusWriter.AUTOSCALER,
            )
        except ApiError as exc:
            if exc.status == 404:
                return _gone(exc)
            if exc.status in (409, 422):
                return Refused(cause=Refusal.CONFLICT, message=exc.message)
            raise
        return Scaled(from_replicas=from_replicas, to_replicas=to_replicas)

    async def restart_pod(self, *, namespace: str, pod: str) -> Restarted | Refused:
        """Delete the pod; its Deployment replaces it."""
        try:
            await self._api.delete_pod(namespace=namespace, name=pod)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return _gone(exc)
        return Restarted(pod=pod)

    async def write_status(
        self, *, owner: Owner, writer: StatusWriter, fields: Mapping[str, Any]
    ) -> StatusWritten | Refused:
        """Apply `fields` of status as `writer`'s field manager: the whole of what that writer
        owns (a field it owned and leaves out is removed)."""
        try:
            await self._api.apply_status(
                namespace=owner.namespace, name=owner.name, status=fields, manager=writer
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            return _gone(exc)
        return StatusWritten(writer=writer)

    async def write_lease(self, body: Mapping[str, Any]) -> LeaseWritten | Refused:
        """Create or renew a Lease; Conflict when another replica wrote first."""
        try:
            await self._api.write_lease(body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            return Refused(cause=Refusal.CONFLICT, message=exc.message)
        return LeaseWritten(holder=str(body["spec"].get("holderIdentity") or ""))

    async def post_event(
        self, *, owner: Owner, type_: str, reason: str, message: str, action: str
    ) -> None:
        """A core/v1 Event on the RerankerDeployment (a courtesy: never fails the caller)."""
        await self._api.post_event(
            owner=owner, type_=type_, reason=reason, message=message, action=action
        )
