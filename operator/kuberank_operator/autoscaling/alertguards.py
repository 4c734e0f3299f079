"""What bounds an alert before it acts: the namespaces the admin allows, and once per alert.

Pure data, no I/O. `AlertScope` is --alert-webhook-namespaces resolved against the watched
namespaces. `AlertIdentity` is one firing alert as Alertmanager names it (fingerprint and
startsAt: a re-sent notification, a retry after an error or a lost answer, carries the same);
`ActedAlerts` remembers the identities that made a change, so a re-sent alert never makes a
second one. The last scale's identity also lives in status.lastScale.alert, so it survives an
operator restart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ALL_NAMESPACES = "*"
# Identities remembered per RerankerDeployment (the oldest are forgotten first).
ACTED_ALERTS_KEPT = 256


@dataclass(frozen=True)
class AlertScope:
    """The namespaces in which alerts may act; None: every namespace (a cluster-wide operator)."""

    namespaces: frozenset[str] | None

    @classmethod
    def resolve(cls, *, allowed: Sequence[str], watched: Sequence[str]) -> AlertScope:
        """--alert-webhook-namespaces (empty or `*`: every watched namespace) within the
        namespaces the operator watches (empty: all)."""
        if not allowed or ALL_NAMESPACES in allowed:
            return cls(frozenset(watched) if watched else None)
        if watched:
            return cls(frozenset(allowed) & frozenset(watched))
        return cls(frozenset(allowed))

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def __str__(self) -> str:
        if self.namespaces is None:
            return "every namespace"
        return ", ".join(sorted(self.namespaces)) or "no namespace"


EVERY_NAMESPACE = AlertScope(None)


@dataclass(frozen=True)
class AlertIdentity:
    """One firing alert: a notification re-sent for it carries the same three."""

    alertname: str
    fingerprint: str
    starts_at: str

    def to_status(self) -> dict[str, str]:
        """As status.lastScale.alert holds it."""
        return {"name": self.alertname, "fingerprint": self.fingerprint, "startsAt": self.starts_at}

    @classmethod
    def from_status(cls, stored: Any) -> AlertIdentity | None:
        if not isinstance(stored, Mapping) or not stored.get("fingerprint"):
            return None
        return cls(
            alertname=str(stored.get("name", "")),
            fingerprint=str(stored["fingerprint"]),
            starts_at=str(stored.get("startsAt", "")),
        )

    def __str__(self) -> str:
        return f"{self.alertname} (fingerprint {self.fingerprint}, firing since {self.starts_at})"


class ActedAlerts:
    """The alert identities that made a change to one resource (a bounded, ordered set)."""

    def __init__(self, *, keep: int = ACTED_ALERTS_KEPT) -> None:
        self._keep = keep
        self._seen: OrderedDict[AlertIdentity, None] = OrderedDict()

    def __contains__(self, identity: object) -> bool:
        return identity in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, identity: AlertIdentity) -> None:
        self._seen[identity] = None
        self._seen.move_to_end(identity)
        while len(self._seen) > self._keep:
            self._seen.popitem(last=False)

    def discard(self, identity: AlertIdentity) -> None:
        self._seen.pop(identity, None)
