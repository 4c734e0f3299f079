"""The policies derived from a spec: spec.autoscaling and spec.oom validated and in the units the
decisions use. Derived once per change of the resource (model.resources) and read by the
evaluator, the alert actions and the alert rules alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kuberank_operator.model.specs import STUCK_SECONDS, AutoscalingSpec, OomSpec

# XIDs after which the GPU needs a reset or a new process (NVIDIA's XID catalogue): double-bit
# ECC (48), GSP/PMU faults (61, 62, 119, 120), row-remap failure (64), NVLink (74), fallen off
# the bus (79), contained/uncontained ECC (94, 95).
CRITICAL_XIDS: frozenset[int] = frozenset({48, 61, 62, 64, 74, 79, 94, 95, 119, 120})


class PolicyError(ValueError):
    """spec.autoscaling cannot be used; the message names the field, the limit and the fix."""


@dataclass(frozen=True)
class ScalePolicy:
    """spec.autoscaling of one RerankerDeployment, validated."""

    mode: Literal["builtin", "external", "off"]
    min_replicas: int
    max_replicas: int
    cooldown_s: float
    up_queue_depth: float
    up_p99_latency_ms: float
    up_gpu_utilization: float
    up_for_s: float
    down_gpu_utilization: float
    down_for_s: float
    up_queue_tokens: float = 0.0  # 0: off

    @property
    def scales(self) -> bool:
        """Whether the operator changes replicas itself (only in builtin mode)."""
        return self.mode == "builtin"


def scale_policy(autoscaling: AutoscalingSpec) -> ScalePolicy:
    """The policy of spec.autoscaling; re-checks what the CRD's CEL rules also reject."""
    if autoscaling.min_replicas > autoscaling.max_replicas:
        raise PolicyError(
            f"spec.autoscaling.minReplicas ({autoscaling.min_replicas}) is above maxReplicas "
            f"({autoscaling.max_replicas}); set minReplicas <= maxReplicas"
        )
    up, down = autoscaling.scale_up, autoscaling.scale_down
    if down.gpu_utilization >= up.gpu_utilization:
        raise PolicyError(
            f"spec.autoscaling.scaleDown.gpuUtilization ({down.gpu_utilization}) must be below "
            f"scaleUp.gpuUtilization ({up.gpu_utilization}), or replicas would flap; lower the "
            "scale-down threshold"
        )
    return ScalePolicy(
        mode=autoscaling.mode,
        min_replicas=autoscaling.min_replicas,
        max_replicas=autoscaling.max_replicas,
        cooldown_s=float(autoscaling.cooldown_seconds),
        up_queue_depth=float(up.queue_depth),
        up_p99_latency_ms=float(up.p99_latency_ms),
        up_gpu_utilization=float(up.gpu_utilization),
        up_for_s=float(up.for_seconds),
        down_gpu_utilization=float(down.gpu_utilization),
        down_for_s=float(down.for_seconds),
        up_queue_tokens=float(up.queue_tokens),
    )


class OomPolicyError(ValueError):
    """A spec field cannot be used; the message names the field, the limit and the fix."""


@dataclass(frozen=True)
class OomPolicy:
    """spec.oom of one RerankerDeployment, validated."""

    max_events: int
    window_s: float
    max_restarts_per_hour: int
    stuck_s: float


def oom_policy(oom: OomSpec, *, stuck_s: float = STUCK_SECONDS) -> OomPolicy:
    """The policy of spec.oom."""
    return OomPolicy(
        max_events=oom.max_events,
        window_s=float(oom.window_seconds),
        max_restarts_per_hour=oom.max_restarts_per_hour,
        stuck_s=stuck_s,
    )


def max_unavailable(value: int | str, *, replicas: int) -> int:
    """A PodDisruptionBudget's maxUnavailable (count or "N%", rounded up) as a pod count."""
    if isinstance(value, int):
        return max(0, value)
    text = value.strip()
    if not text.endswith("%") or not text[:-1].isdigit():
        raise OomPolicyError(
            f"spec.rollout.maxUnavailable is {value!r}; use a count or a percentage like 25%"
        )
    return -(-replicas * int(text[:-1]) // 100)
