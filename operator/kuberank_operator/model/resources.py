"""One RerankerDeployment as every loop reads it: parsed once per change, immutable.

kopf calls the RerankerDeployment index (model.indexes) on every change of the object; that call
builds a `ResourceView` here: its identity, the status as stored, and either the typed spec with
the policies derived from it or the reason the spec cannot be used. The reconcile loop, the
autoscaler and the tuning watch read this view and never parse the spec themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kuberank_operator.model.naming import Owner
from kuberank_operator.model.parsing import parse_spec
from kuberank_operator.model.policies import (
    OomPolicy,
    OomPolicyError,
    PolicyError,
    ScalePolicy,
    max_unavailable,
    oom_policy,
    scale_policy,
)
from kuberank_operator.model.specs import RerankerSpec, SpecError

Key = tuple[str, str]  # (namespace, name) of a RerankerDeployment


@dataclass(frozen=True)
class Policies:
    """What the decisions read, derived from the spec once."""

    scale: ScalePolicy
    oom: OomPolicy
    # spec.rollout.maxUnavailable as a pod count at spec.replicas.
    max_unavailable: int


@dataclass(frozen=True)
class ResourceView:
    owner: Owner
    deleting: bool
    # status as stored, read-only: the writers read their own fields back after a restart.
    status: Mapping[str, Any]
    # The spec as submitted, read-only: the admission re-check judges it as the API server's
    # policy judges object.spec.
    spec_body: Mapping[str, Any]
    # Exactly one of spec and spec_error is set.
    spec: RerankerSpec | None
    spec_error: str | None
    # None when the spec is invalid or its policies cannot be derived (policy_error says why).
    policies: Policies | None
    policy_error: str | None

    @property
    def key(self) -> Key:
        return self.owner.key

    @property
    def unusable(self) -> str | None:
        """Why the autoscaler cannot act on this resource now; None when it can."""
        if self.deleting:
            return "RerankerDeployment is being deleted"
        if self.spec_error is not None:
            return f"spec cannot be used: {self.spec_error}"
        if self.policy_error is not None:
            return f"spec cannot be used: {self.policy_error}"
        return None


def _policies(spec: RerankerSpec) -> Policies:
    return Policies(
        scale=scale_policy(spec.autoscaling),
        oom=oom_policy(spec.oom),
        max_unavailable=max_unavailable(spec.rollout.max_unavailable, replicas=spec.replicas),
    )


def resource_view(body: Mapping[str, Any]) -> ResourceView:
    """Parse one RerankerDeployment body into its view (never raises for a bad spec)."""
    meta = body.get("metadata") or {}
    owner = Owner(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
    )
    spec: RerankerSpec | None = None
    spec_error = policy_error = None
    policies = None
    try:
        spec = parse_spec(body.get("spec") or {})
    except SpecError as exc:
        spec_error = str(exc)
    if spec is not None:
        try:
            policies = _policies(spec)
        except (PolicyError, OomPolicyError) as exc:
            policy_error = str(exc)
    return ResourceView(
        owner=owner,
        deleting=bool(meta.get("deletionTimestamp")),
        # A copy: kopf's body is a live view that changes under us.
        status=copy.deepcopy(dict(body.get("status") or {})),
        spec_body=copy.deepcopy(dict(body.get("spec") or {})),
        spec=spec,
        spec_error=spec_error,
        policies=policies,
        policy_error=policy_error,
    )
