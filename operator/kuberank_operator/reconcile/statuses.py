"""Compute a RerankerDeployment's status from what is observed. Pure: no clock, no I/O.

Conditions: Ready, Progressing, Degraded, CapacityLimited, TuningApplied. This is everything the
reconciler owns of status (its field manager, model.naming.StatusWriter.RECONCILER); lastScale
and oom have writers of their own in autoscaling and are never produced here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kuberank_operator.model import naming
from kuberank_operator.model.observations import ChildSummary, ContainerProblem, PodSummary
from kuberank_operator.model.signals import PodTuning
from kuberank_operator.model.specs import Accelerator, RerankerSpec, accelerator_shown
from kuberank_operator.reconcile.capacity import Capacity

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CAPACITY_LIMITED = "CapacityLimited"
TUNING_APPLIED = "TuningApplied"

# The reconciler's fields besides observedGeneration, state, reason and conditions: an invalid
# spec keeps them as last written (the reconciler applies all it owns every time).
COUNTED_FIELDS = (
    "replicas",
    "readyReplicas",
    "updatedReplicas",
    "selector",
    "ready",
    "capacity",
    "accelerator",
)

# Most severe first: the Degraded reason names the worst thing seen.
PROBLEM_SEVERITY = ("OOMKilled", "CrashLoopBackOff", "ImagePullBackOff", "ContainerConfigError")
# Problems that make a pod useless even if the Deployment counts it: Ready stays False.
CRASH_REASONS = frozenset({"OOMKilled", "CrashLoopBackOff"})


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """Everything one status computation looks at."""

    name: str
    generation: int
    spec: RerankerSpec
    deployment: ChildSummary | None
    pods: Sequence[PodSummary]
    capacity: Capacity
    # The last apply failed with this message (None when it worked or was not needed).
    apply_error: str | None = None
    # Per pod, what its sidecar reports of GPU tuning; pods not (yet) read are absent.
    tuning_states: Mapping[str, PodTuning] | None = None
    # The operator's --accelerator: none runs the pods on CPU (status.accelerator: cpu).
    accelerator: Accelerator = "nvidia"


@dataclass(frozen=True)
class StatusView:
    observed_generation: int
    replicas: int
    ready_replicas: int
    updated_replicas: int
    selector: str
    ready: str
    state: str
    reason: str
    capacity: Capacity
    conditions: tuple[Condition, ...]
    # status.accelerator: the GPU resource each pod holds one of, or cpu.
    accelerator: str = ""

    def condition(self, type_: str) -> Condition:
        return next(c for c in self.conditions if c.type == type_)


def _worst_problem(pods: Sequence[PodSummary]) -> tuple[PodSummary, ContainerProblem, int] | None:
    """The most severe container problem, its pod, and how many pods have problems."""
    found = [(pod, problem) for pod in pods if not pod.deleting for problem in pod.problems]
    if not found:
        return None
    affected = len({pod.name for pod, _ in found})

    def severity(item: tuple[PodSummary, ContainerProblem]) -> tuple[int, str]:
        reason = item[1].reason
        rank = (
            PROBLEM_SEVERITY.index(reason) if reason in PROBLEM_SEVERITY else len(PROBLEM_SEVERITY)
        )
        return rank, item[0].name

    pod, problem = min(found, key=severity)
    return pod, problem, affected


def _more(count: int) -> str:
    if count <= 1:
        return ""
    return f" (and {count - 1} more pod{'s' if count > 2 else ''})"


def _degraded(observed: Observed, *, live: Sequence[PodSummary]) -> Condition:
    worst = _worst_problem(live)
    if worst is not None:
        pod, problem, affected = worst
        return Condition(
            DEGRADED, "True", problem.reason, f"pod {pod.name}: {problem.message}{_more(affected)}"
        )
    dep = observed.deployment
    if dep is not None and dep.replica_failure:
        return Condition(DEGRADED, "True", "ReplicaFailure", dep.replica_failure)
    unschedulable = [p for p in live if p.unschedulable_message]
    # Pending for lack of devices is CapacityLimited's story; other misfits are degradation.
    if unschedulable and not observed.capacity.limited:
        first = unschedulable[0]
        return Condition(
            DEGRADED,
            "True",
            "Unschedulable",
            f"pod {first.name}: {first.unschedulable_message}{_more(len(unschedulable))}",
        )
    if dep is not None and dep.progress_deadline_exceeded:
        return Condition(
            DEGRADED,
            "True",
            "ProgressDeadlineExceeded",
            f"Deployment {dep.name} made no progress for 900 s",
        )
    if observed.apply_error:
        return Condition(DEGRADED, "True", "ApplyFailed", observed.apply_error)
    return Condition(DEGRADED, "False", "AsExpected", "no pod is failing")


def _ready(
    observed: Observed, *, desired: int, ready: int, degraded: Condition, crash: bool
) -> Condition:
    if observed.deployment is None:
        return Condition(READY, "False", "Creating", "the Deployment does not exist yet")
    if crash:
        return Condition(READY, "False", degraded.reason, degraded.message)
    if desired == 0:
        return Condition(READY, "True", "ScaledToZero", "spec.replicas is 0")
    if ready >= desired:
        return Condition(READY, "True", "AllReplicasReady", f"{ready}/{desired} pods ready")
    if observed.capacity.limited:
        return Condition(
            READY,
            "False",
            "CapacityLimited",
            f"{ready}/{desired} pods ready; " + observed.capacity.message,
        )
    if degraded.status == "True":
        return Condition(
            READY, "False", degraded.reason, f"{ready}/{desired} pods ready; {degraded.message}"
        )
    return Condition(READY, "False", "PodsNotReady", f"{ready}/{desired} pods ready")


def _progressing(observed: Observed, *, desired: int, ready: int) -> Condition:
    dep = observed.deployment
    if dep is None:
        return Condition(PROGRESSING, "True", "Creating", "creating the Deployment")
    if dep.progress_deadline_exceeded:
        return Condition(
            PROGRESSING, "False", "ProgressDeadlineExceeded", f"Deployment {dep.name} stalled"
        )
    if dep.observed_generation < dep.generation or dep.updated_replicas < desired:
        return Condition(
            PROGRESSING,
            "True",
            "RollingOut",
            f"{dep.updated_replicas}/{desired} pods run the current spec",
        )
    if dep.replicas > desired:
        return Condition(
            PROGRESSING, "True", "ScalingDown", f"{dep.replicas} pods, scaling down to {desired}"
        )
    if ready < desired:
        return Condition(PROGRESSING, "True", "ScalingUp", f"{ready}/{desired} pods ready")
    return Condition(PROGRESSING, "False", "Complete", f"{ready}/{desired} pods updated and ready")


def _capacity(capacity: Capacity, accelerator: Accelerator) -> Condition:
    if accelerator == "none":
        return Condition(
            CAPACITY_LIMITED,
            "False",
            "NoAccelerator",
            "the operator runs with --accelerator=none: pods request no GPU and run the model on "
            "CPU; the scheduler places them by CPU and memory",
        )
    if capacity.limited:
        return Condition(CAPACITY_LIMITED, "True", "InsufficientDevices", capacity.message)
    return Condition(CAPACITY_LIMITED, "False", "SufficientDevices", capacity.message)


# Sidecar states that say tuning cannot happen on that pod: TuningApplied is False with the
# state as reason (a state this operator does not know counts as failed).
TUNING_FAILURES = ("failed", "denied", "refused")
# Not there yet: still applying, or a pod of an older spec whose sidecar was not asked to tune.
TUNING_NOT_YET = ("pending", "disabled", "restored")


def _pods_named(pods: Sequence[str]) -> str:
    shown = ", ".join(pods[:3])
    return shown + (f" and {len(pods) - 3} more" if len(pods) > 3 else "")


def _tuning(observed: Observed) -> Condition:
    """TuningApplied: True only when every ready pod's sidecar reports the tuning applied."""
    gpu = observed.spec.gpu
    if not gpu.tuning_requested:
        return Condition(
            TUNING_APPLIED,
            "False",
            "NotRequested",
            "spec.gpu sets no power limit or locked clocks",
        )
    wanted = []
    if gpu.power_limit_watts:
        wanted.append(f"power limit {gpu.power_limit_watts} W")
    if gpu.locked_clocks.requested:
        wanted.append("locked clocks")
    what = " and ".join(wanted)
    if not observed.spec.sidecar.enabled:
        return Condition(
            TUNING_APPLIED,
            "False",
            "SidecarDisabled",
            f"{what} requested, but spec.sidecar.enabled is false and the sidecar applies it; "
            "enable the sidecar or remove the tuning from spec.gpu",
        )
    states = observed.tuning_states or {}
    ready = sorted(p.name for p in observed.pods if p.ready and not p.deleting)
    if not ready:
        return Condition(
            TUNING_APPLIED,
            "Unknown",
            "AwaitingSidecar",
            f"{what} requested; no pod is ready yet, each pod's sidecar reports the result "
            "on :9400/tuning",
        )
    bad = [(pod, states[pod]) for pod in ready if pod in states]
    bad = [(pod, t) for pod, t in bad if t.state not in (*TUNING_NOT_YET, "applied")]
    if bad:
        order = {state: i for i, state in enumerate(TUNING_FAILURES)}
        bad.sort(key=lambda item: (order.get(item[1].state, 0), item[0]))
        worst = bad[0][1].state
        details = [
            f"pod {pod}: {t.state}" + (f" ({t.reason})" if t.reason else "") for pod, t in bad
        ]
        shown = "; ".join(details[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        return Condition(
            TUNING_APPLIED,
            "False",
            worst.capitalize(),
            f"{what} not applied on {len(bad)}/{len(ready)} ready pods: {shown}; "
            "GET :9400/tuning on a pod's sidecar says why",
        )
    waiting = [pod for pod in ready if pod not in states or states[pod].state != "applied"]
    if waiting:
        return Condition(
            TUNING_APPLIED,
            "Unknown",
            "AwaitingSidecar",
            f"{what} requested; {len(ready) - len(waiting)}/{len(ready)} ready pods report it "
            f"applied, waiting for {_pods_named(waiting)}",
        )
    return Condition(
        TUNING_APPLIED,
        "True",
        "Applied",
        f"{what} applied on all {len(ready)} ready pods",
    )


def compute_status(observed: Observed) -> StatusView:
    desired = observed.spec.replicas
    live = [p for p in observed.pods if not p.deleting]
    dep = observed.deployment
    ready = dep.ready_replicas if dep is not None else 0
    replicas = dep.replicas if dep is not None else len(live)
    crash = any(pr.reason in CRASH_REASONS for p in live for pr in p.problems)
    degraded = _degraded(observed, live=live)
    conditions = (
        _ready(observed, desired=desired, ready=ready, degraded=degraded, crash=crash),
        _progressing(observed, desired=desired, ready=ready),
        degraded,
        _capacity(observed.capacity, observed.accelerator),
        _tuning(observed),
    )
    by_type = {c.type: c for c in conditions}
    ready_c = by_type[READY]
    if degraded.status == "True":
        state, reason = "Degraded", degraded.reason
    elif ready_c.status == "True":
        state = "ScaledToZero" if ready_c.reason == "ScaledToZero" else "Ready"
        reason = ready_c.reason
    elif observed.capacity.limited:
        state, reason = "CapacityLimited", by_type[CAPACITY_LIMITED].reason
    else:
        state, reason = "Progressing", by_type[PROGRESSING].reason
    return StatusView(
        observed_generation=observed.generation,
        replicas=replicas,
        ready_replicas=ready,
        updated_replicas=dep.updated_replicas if dep is not None else 0,
        selector=naming.selector_string(observed.name),
        ready=f"{ready}/{desired}",
        state=state,
        reason=reason,
        capacity=observed.capacity,
        conditions=conditions,
        accelerator=accelerator_shown(observed.accelerator, observed.spec.gpu.resource_name),
    )


def status_patch(
    view: StatusView, *, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """The reconciler's status fields, as it applies them; lastTransitionTime only moves when a
    condition's status changes."""
    before = {
        c.get("type"): c
        for c in ((previous or {}).get("conditions") or [])
        if isinstance(c, Mapping)
    }
    conditions = []
    for cond in view.conditions:
        old = before.get(cond.type)
        since = now if old is None or old.get("status") != cond.status else None
        conditions.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": since or (old or {}).get("lastTransitionTime") or now,
                "observedGeneration": view.observed_generation,
            }
        )
    cap = view.capacity
    return {
        "observedGeneration": view.observed_generation,
        "replicas": view.replicas,
        "readyReplicas": view.ready_replicas,
        "updatedReplicas": view.updated_replicas,
        "selector": view.selector,
        "ready": view.ready,
        "state": view.state,
        "reason": view.reason,
        "accelerator": view.accelerator,
        "capacity": {
            "resourceName": cap.resource_name,
            "needed": cap.needed,
            "free": cap.free,
            "matchingNodes": cap.matching_nodes,
        },
        "conditions": conditions,
    }


def status_changed(patch: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Would applying the patch change the stored status? (ignores fields the patch omits)"""
    current = current or {}
    return any(current.get(k) != v for k, v in patch.items())


def transitions(
    patch: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of every condition whose status or reason changed."""
    before = {
        c.get("type"): (c.get("status"), c.get("reason"))
        for c in ((previous or {}).get("conditions") or [])
        if isinstance(c, Mapping)
    }
    out = []
    for cond in patch.get("conditions") or []:
        if before.get(cond["type"]) != (cond["status"], cond["reason"]):
            out.append((cond["type"], cond["status"], cond["reason"], cond["message"]))
    return out
