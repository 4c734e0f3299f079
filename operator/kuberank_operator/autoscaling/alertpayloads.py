"""An Alertmanager webhook payload (version 4) as the receiver reads it, alert by alert.

Pure: no HTTP. A body that is not a version 4 payload at all raises PayloadError; within one,
each alert is parsed on its own, so a malformed alert becomes an `InvalidAlert` beside the good
ones (Alertmanager answers for the whole notification: one bad alert must not cost the others).
`AlertOutcome` is what became of one alert, as the response and the metric say it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from kuberank_operator.autoscaling.alertguards import AlertIdentity
from kuberank_operator.rendering.alertrules import (
    ACTION_LABEL,
    CR_LABEL,
    NAMESPACE_LABEL,
    POD_LABEL,
)

SUPPORTED_VERSION = "4"
ACTIONS = ("scale-up", "scale-down", "restart-pod", "none")

# Alertmanager's fingerprints are 16 hex digits, startsAt an RFC 3339 time: what is kept of each
# (in memory and in status) is bounded whatever a sender puts there.
MAX_ID_CHARS = 64

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

    @property
    def identity(self) -> AlertIdentity:
        return AlertIdentity(
            alertname=self.alertname, fingerprint=self.fingerprint, starts_at=self.starts_at
        )


@dataclass(frozen=True)
class InvalidAlert:
    """An alert of a payload that cannot be acted on (answered, counted, never acted on)."""

    alertname: str
    # The `action` label of kuberank_operator_alerts_total: the action, or "unknown".
    action: str
    error: str


def _fingerprint(alert: Mapping[str, Any], labels: Mapping[str, Any]) -> str:
    """Alertmanager's fingerprint; a hash of the labels (as Alertmanager's is) when absent."""
    given = alert.get("fingerprint")
    if isinstance(given, str) and given:
        return given[:MAX_ID_CHARS]
    text = "\x00".join(
        f"{k}\x00{v}" for k, v in sorted((str(k), str(v)) for k, v in labels.items())
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parse_alert(i: int, alert: Any) -> AlertRequest | InvalidAlert | None:
    """One alert of payload.alerts; None when it is not kuberank's (no `kuberank_action`)."""
    where = f"payload.alerts[{i}]"
    if not isinstance(alert, Mapping) or not isinstance(alert.get("labels"), Mapping):
        return InvalidAlert("", "unknown", f"{where} must be an object with labels")
    labels: Mapping[str, Any] = alert["labels"]
    action = labels.get(ACTION_LABEL)
    if action is None:
        return None
    alertname = str(labels.get("alertname", ""))[:256]
    if action not in ACTIONS:
        return InvalidAlert(
            alertname,
            "unknown",
            f"{where}.labels.{ACTION_LABEL} is {str(action)[:64]!r}; expected one of "
            f"{', '.join(ACTIONS)}",
        )
    status = alert.get("status")
    if status not in ("firing", "resolved"):
        return InvalidAlert(alertname, action, f"{where}.status must be firing or resolved")
    needed = [NAMESPACE_LABEL, CR_LABEL] if action != "none" else []
    if action == "restart-pod":
        needed.append(POD_LABEL)
    missing = [label for label in needed if not labels.get(label)]
    if missing:
        return InvalidAlert(
            alertname, action, f"{where}.labels lacks {', '.join(missing)} (needed by {action})"
        )
    annotations = alert.get("annotations")
    summary = annotations.get("summary", "") if isinstance(annotations, Mapping) else ""
    pod = labels.get(POD_LABEL)
    return AlertRequest(
        alertname=alertname,
        action=action,
        status=status,
        namespace=str(labels.get(NAMESPACE_LABEL, "")),
        name=str(labels.get(CR_LABEL, "")),
        pod=str(pod) if pod else None,
        fingerprint=_fingerprint(alert, labels),
        starts_at=str(alert.get("startsAt", ""))[:MAX_ID_CHARS],
        summary=str(summary),
    )


ParsedAlert = tuple[int, AlertRequest | InvalidAlert]


def parse_payload(payload: Any) -> list[ParsedAlert]:
    """The kuberank alerts of a payload by their index in payload.alerts, each parsed or said
    invalid on its own; alerts without `kuberank_action` are not ours. Raises PayloadError only
    for a body that is not an Alertmanager version 4 payload at all."""
    if not isinstance(payload, Mapping):
        raise PayloadError("the body must be a JSON object (Alertmanager webhook payload)")
    version = str(payload.get("version", ""))
    if version != SUPPORTED_VERSION:
        raise PayloadError(
            f"payload version is {version[:16]!r}; this receiver reads Alertmanager's version "
            f"{SUPPORTED_VERSION}"
        )
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("payload.alerts must be a list")
    parsed = ((i, _parse_alert(i, alert)) for i, alert in enumerate(alerts))
    return [(i, item) for i, item in parsed if item is not None]


class AlertResult(StrEnum):
    """What became of one alert (the `outcome` label of kuberank_operator_alerts_total)."""

    ACTED = "acted"
    UNCHANGED = "unchanged"
    IGNORED = "ignored"
    # In a namespace --alert-webhook-namespaces does not allow.
    REFUSED = "refused"
    # Malformed: a label or field the receiver needs is missing or unknown.
    INVALID = "invalid"
    # An error before the alert changed anything, or one that leaves unknown whether it did.
    FAILED = "failed"


@dataclass(frozen=True)
class AlertOutcome:
    result: AlertResult
    detail: str
    # A failure before anything was written: Alertmanager may send the alert again.
    retry: bool = False

    def __str__(self) -> str:
        """As the webhook's response says it: "acted: scaled 1 -> 2"."""
        return f"{self.result.value}: {self.detail}"
