"""The one module of our code that talks to the Kubernetes API (kopf does its own watching).

Writes raise ApiError; actuator.py turns their answers into typed outcomes.

It uses the official `kubernetes` client for what it does well — kubeconfig and in-cluster
credentials, token refresh, TLS — and sends raw JSON through its ApiClient, skipping the
generated models. The client is synchronous; each call is one short request, run on a small
dedicated thread pool so that the event loop (kopf's watches and our workers) never blocks.
kopf's own API client is private (kopf._cogs), so it is not used here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3.exceptions

from kuberank_operator.cluster.reachability import Reachability
from kuberank_operator.model import naming
from kuberank_operator.model.naming import Owner

logger = logging.getLogger(__name__)

# Where each kind the operator writes lives: (path prefix, plural). Namespaced only.
KIND_PATHS: dict[tuple[str, str], tuple[str, str]] = {
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("/apis/monitoring.coreos.com/v1", "podmonitors"),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        "/apis/monitoring.coreos.com/v1",
        "prometheusrules",
    ),
    (naming.API_VERSION, naming.KIND): (f"/apis/{naming.API_VERSION}", naming.PLURAL),
}
REQUEST_TIMEOUT_S = 30.0


class ApiError(Exception):
    """A request the API server refused; `status` is the HTTP code (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    try:
        prefix, plural = KIND_PATHS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not write {kind} ({api_version})") from None
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def _error_message(data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return data.decode(errors="replace")[:500]
    if isinstance(body, Mapping):
        return str(body.get("message") or body.get("reason") or body)
    return str(body)


class KubeApi:
    def __init__(
        self, api_client: Any, *, threads: int = 8, reachability: Reachability | None = None
    ) -> None:
        self._client = api_client
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kubeapi")
        self.reachability = reachability or Reachability()

    @classmethod
    def from_environment(cls, *, kubeconfig: str | None = None, threads: int = 8) -> KubeApi:
        """In a pod: its service account; elsewhere: --kubeconfig, $KUBECONFIG or ~/.kube/config."""
        config = kubernetes.client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        else:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=config
            )
        # One pooled connection per thread, so threads never wait for a socket.
        config.connection_pool_maxsize = threads
        return cls(kubernetes.client.ApiClient(config), threads=threads)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, Any]:
        params = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(*params, _request_timeout=REQUEST_TIMEOUT_S)
            response.read()
        except kubernetes.client.ApiException as exc:
            self.reachability.answered()
            raise ApiError(int(exc.status or 0), str(exc.reason)) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            # urllib3 raises its own errors (MaxRetryError, ProtocolError), not OSError
            message = f"no answer from the API server: {exc}"
            self.reachability.unanswered(message)
            raise ApiError(0, message) from exc
        self.reachability.answered()
        data = response.data or b""
        if not 200 <= response.status < 300:
            raise ApiError(response.status, _error_message(data))
        return response.status, json.loads(data) if data else None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool,
            lambda: self._request(method, path, body=body, content_type=content_type, query=query),
        )

    async def apply(self, obj: Mapping[str, Any], *, manager: str = naming.FIELD_MANAGER) -> bool:
        """Server-side apply as `manager`, taking over conflicting fields; True when created."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        status, _ = await self._call(
            "PATCH",
            path,
            body=dict(obj),
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", manager), ("force", "true")],
        )
        return status == 201

    async def apply_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any], manager: str
    ) -> None:
        """Server-side apply of a RerankerDeployment's status subresource as `manager`: the
        fields in `status` become that manager's; its fields left out are removed."""
        path = object_path(naming.API_VERSION, naming.KIND, namespace, name) + "/status"
        body = {
            "apiVersion": naming.API_VERSION,
            "kind": naming.KIND,
            "metadata": {"namespace": namespace, "name": name},
            "status": dict(status),
        }
        await self._call(
            "PATCH",
            path,
            body=body,
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", manager), ("force", "true")],
        )

    async def post_event(
        self, *, owner: Owner, type_: str, reason: str, message: str, action: str
    ) -> None:
        """A core/v1 Event on the RerankerDeployment, as `kubectl describe rrd` shows it."""
        now = _now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{owner.name}.{uuid.uuid4().hex[:12]}",
                "namespace": owner.namespace,
            },
            "involvedObject": {
                "apiVersion": naming.API_VERSION,
                "kind": naming.KIND,
                "name": owner.name,
                "namespace": owner.namespace,
                "uid": owner.uid,
            },
            "type": type_,
            "reason": reason,
            # The API server rejects event messages over 1 KiB.
            "message": message[:1000],
            "action": action,
            "source": {"component": naming.EVENT_SOURCE},
            "reportingComponent": naming.EVENT_SOURCE,
            "reportingInstance": os.environ.get("POD_NAME", "local"),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._call("POST", f"/api/v1/namespaces/{owner.namespace}/events", body=event)
        except ApiError as exc:
            # An event is a courtesy: losing one must never fail a reconcile.
            logger.warning("could not post event %s on %s/%s: %s", reason, *owner.key, exc)

    # --- the rest of what the actuator (actuator.py) asks -------------------------------

    async def patch_scale(
        self, *, namespace: str, name: str, from_replicas: int, to_replicas: int, manager: str
    ) -> None:
        """Set a RerankerDeployment's replicas through its scale subresource, only if they are
        still `from_replicas` (a JSON-patch test fails with 422 otherwise)."""
        path = object_path(naming.API_VERSION, naming.KIND, namespace, name) + "/scale"
        patch = [
            {"op": "test", "path": "/spec/replicas", "value": from_replicas},
            {"op": "replace", "path": "/spec/replicas", "value": to_replicas},
        ]
        await self._call(
            "PATCH",
            path,
            body=patch,
            content_type="application/json-patch+json",
            query=[("fieldManager", manager)],
        )

    async def delete_pod(self, *, namespace: str, name: str) -> None:
        await self._call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")

    async def read_secret_key(self, *, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret or the key is missing."""
        try:
            _, body = await self._call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except ApiError as exc:
            if exc.status in (403, 404):
                logger.warning("cannot read secret %s/%s: %s", namespace, name, exc)
                return None
            raise
        encoded = ((body or {}).get("data") or {}).get(key)
        if not encoded:
            return None
        try:
            return base64.b64decode(encoded).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            return None

    async def read_configmap(self, *, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data; None when it is missing or this ServiceAccount may not read it."""
        try:
            _, body = await self._call("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        except ApiError as exc:
            if exc.status in (403, 404):
                logger.warning("cannot read configmap %s/%s: %s", namespace, name, exc)
                return None
            raise
        return {str(k): str(v) for k, v in ((body or {}).get("data") or {}).items()}

    async def serves_kinds(self, group_version: str, kinds: Sequence[str]) -> bool:
        """Whether the API server serves all these kinds in group_version (discovery)."""
        try:
            _, body = await self._call("GET", f"/apis/{group_version}")
        except ApiError as exc:
            if exc.status in (403, 404, 503):
                return False
            raise
        served = {r.get("kind") for r in (body or {}).get("resources") or []}
        return all(kind in served for kind in kinds)

    async def delete_object(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> None:
        await self._call("DELETE", object_path(api_version, kind, namespace, name))

    # --- leader election (leases.py decides, electing.py loops) ---------------------------

    def _lease_path(self, namespace: str, name: str = "") -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{path}/{name}" if name else path

    async def read_lease(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            _, body = await self._call("GET", self._lease_path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body or {})

    async def write_lease(self, body: Mapping[str, Any]) -> None:
        """Create the Lease, or replace it at the resourceVersion it carries (409 when another
        replica wrote first)."""
        meta = body["metadata"]
        if meta.get("resourceVersion"):
            await self._call(
                "PUT", self._lease_path(meta["namespace"], meta["name"]), body=dict(body)
            )
        else:
            await self._call("POST", self._lease_path(meta["namespace"]), body=dict(body))
