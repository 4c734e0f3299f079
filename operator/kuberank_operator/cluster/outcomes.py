"""What a change to the cluster came to: typed outcomes, never strings to be parsed back.

The actuator (actuator.py) returns one of these for every change it makes; callers match on the
type, and metric labels come from the enums' values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kuberank_operator.model.naming import StatusWriter


class Refusal(StrEnum):
    """Why the API server did not make a change."""

    # The object is not there (404): deleted meanwhile, or already replaced.
    GONE = "gone"
    # Someone else changed it first: a scale whose replica test failed, a Lease written first.
    CONFLICT = "conflict"
    # The API server refused the request itself (invalid object, forbidden, throttled, down).
    REJECTED = "rejected"


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str
    created: bool


@dataclass(frozen=True)
class Deleted:
    kind: str
    name: str


@dataclass(frozen=True)
class Scaled:
    from_replicas: int
    to_replicas: int


@dataclass(frozen=True)
class Restarted:
    pod: str


@dataclass(frozen=True)
class StatusWritten:
    writer: StatusWriter


@dataclass(frozen=True)
class LeaseWritten:
    holder: str


@dataclass(frozen=True)
class Refused:
    cause: Refusal
    message: str
