"""Whether the Kubernetes API server answers the operator's own calls: the readiness fact behind
the operator's /readyz once its watches are listed.

Every call of `KubeApi` reports its outcome: any HTTP answer (a refusal included) means the API
server is reachable; a call that got no answer (refused connection, TLS failure, timeout) counts
against it. The operator is unready once calls have gone unanswered for `unready_after_s` with
no answer in between: long enough that one dropped connection does not flap the probe, short
enough that a replica cut off from the API server leaves its Service (the alert webhook) within
a probe period or two. The leader's lease renewals and every reconcile keep calls coming.
Thread-safe: `KubeApi` calls from its thread pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

UNREADY_AFTER_S = 10.0


class Reachability:
    def __init__(
        self,
        *,
        unready_after_s: float = UNREADY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._unready_after = unready_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._failures = 0
        self._last_error = ""

    def answered(self) -> None:
        with self._lock:
            self._failing_since = None
            self._failures = 0
            self._last_error = ""

    def unanswered(self, error: str) -> None:
        with self._lock:
            if self._failing_since is None:
                self._failing_since = self._clock()
            self._failures += 1
            self._last_error = error

    def problem(self) -> str | None:
        """None while the API server answers; else why the operator is not ready."""
        with self._lock:
            if self._failing_since is None:
                return None
            silent = self._clock() - self._failing_since
            if silent < self._unready_after:
                return None
            return (
                f"the Kubernetes API server has not answered for {silent:.0f} s "
                f"({self._failures} calls); last error: {self._last_error}"
            )
