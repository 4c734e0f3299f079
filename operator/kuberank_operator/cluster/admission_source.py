"""The cluster admin's admission rules, read from the chart's ConfigMap for the re-check.

The chart renders the rules (values admission.*) into one ConfigMap that its
ValidatingAdmissionPolicy reads as params; the operator reads the same ConfigMap before it
renders a pod (--admission-configmap). Read at most every `ttl` seconds. Without the flag, or
when the ConfigMap cannot be read, the built-in rules apply: they are the chart's defaults (no
host paths, no GPU tuning, only the kuberank image, ClusterIP only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from kuberank_operator.model import naming
from kuberank_operator.model.admission import AdmissionPolicy

logger = logging.getLogger(__name__)

ReadConfigMap = Callable[[str, str], Awaitable[dict[str, str] | None]]


def configmap_ref(value: str) -> tuple[str, str] | None:
    """NAMESPACE/NAME as --admission-configmap gives it; None for the empty value."""
    if not value:
        return None
    return naming.namespaced_ref(
        value,
        flag="--admission-configmap",
        hint="the chart's <release>-admission ConfigMap; empty uses the built-in rules",
    )


class AdmissionSource:
    def __init__(
        self,
        read: ReadConfigMap,
        ref: tuple[str, str] | None,
        *,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ref = ref
        self._ttl = ttl
        self._clock = clock
        self._policy = AdmissionPolicy()
        self._read_at: float | None = None
        self._warned = False

    async def current(self) -> AdmissionPolicy:
        if self._ref is None:
            return self._policy
        now = self._clock()
        if self._read_at is not None and now - self._read_at < self._ttl:
            return self._policy
        data = await self._read(*self._ref)
        self._read_at = now
        if data is None:
            if not self._warned:
                logger.warning(
                    "admission rules %s/%s cannot be read: using the built-in rules", *self._ref
                )
                self._warned = True
            self._policy = AdmissionPolicy()
        else:
            self._warned = False
            self._policy = AdmissionPolicy.from_configmap_data(data)
        return self._policy
