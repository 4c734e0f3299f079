"""The running sidecar: backend, pollers and tuning wired together, started and stopped."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuberank_sidecar.collection import ExportContext, TelemetryView
from kuberank_sidecar.devices import NvmlBackend, NvmlError
from kuberank_sidecar.polling import TelemetryPoller, XidWatcher
from kuberank_sidecar.records import ErrorCounts, SampleBoard, XidLedger
from kuberank_sidecar.resolving import DeviceResolver, ResolverConfig
from kuberank_sidecar.tuning import TuningController
from kuberank_sidecar.tuning_plans import TuningRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SidecarConfig:
    """Everything the command line decides (see cli.py for each flag's meaning)."""

    export: ExportContext
    resolver: ResolverConfig
    tuning: TuningRequest
    interval_s: float = 15.0
    resolve_interval_s: float = 30.0
    xid_wait_s: float = 1.0
    tuning_journal: Path | None = None
    tuning_assume_exclusive: bool = False


class Sidecar:
    """Owns the background threads; scrapes read copies of what they observed."""

    def __init__(self, config: SidecarConfig, backend: NvmlBackend) -> None:
        self.config = config
        self.backend = backend
        self.board = SampleBoard()
        self.errors = ErrorCounts()
        self.xids = XidLedger()
        self.tuning = TuningController(
            backend,
            config.tuning,
            journal_path=config.tuning_journal,
            assume_exclusive=config.tuning_assume_exclusive,
        )
        self.poller = TelemetryPoller(
            backend,
            DeviceResolver(config.resolver),
            board=self.board,
            errors=self.errors,
            interval_s=config.interval_s,
            resolve_interval_s=config.resolve_interval_s,
            after_poll=self._after_poll,
        )
        self.xid_watcher = XidWatcher(
            backend, self.poller, ledger=self.xids, errors=self.errors, wait_s=config.xid_wait_s
        )
        self._started = False
        self._stopped = False

    def _after_poll(self) -> None:
        tree = self.poller.tree
        if tree is not None:
            self.tuning.on_devices(self.poller.owned, self.poller.claim, tree)

    def start(self) -> None:
        """Open NVML, poll once (so the first scrape has data), tune, start the threads."""
        try:
            self.backend.open()
        except NvmlError as exc:
            # Keep serving: the poller re-initialises NVML until it answers.
            self.errors.add("init", exc.kind)
            log.error("NVML did not initialise (%s); retrying every poll", exc)
        self.poller.poll_once()
        self.poller.start()
        self.xid_watcher.start()
        self._started = True

    def stop(self) -> None:
        """Stop polling and put the card back as it was; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        self.poller.stop()
        self.xid_watcher.stop()
        self.tuning.restore()
        self.backend.close()

    def view(self) -> TelemetryView:
        """A consistent copy of what the threads observed, for one scrape."""
        return TelemetryView(
            samples=self.board.samples(),
            xids=self.xids.snapshot(),
            errors=self.errors.snapshot(),
            tuning=self.tuning.statuses(),
            plans=self.tuning.plans(),
            now=time.monotonic(),
            poll_duration_s=self.board.last_poll_duration_s,
            owned_source=self.poller.claim.source,
        )

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, details): healthy while the poller thread runs and polls on time."""
        finished = self.board.last_poll_finished_at
        age = None if finished is None else time.monotonic() - finished
        alive = self.poller.alive() or not self._started
        # A poll stuck in the driver for 3 intervals means NVML hangs: report it, keep serving.
        polling = age is not None and age <= 3 * self.config.interval_s + 5
        devices = [
            {"uuid": s.device.uuid, "error": None if s.error is None else s.error.value}
            for s in self.board.samples()
        ]
        return alive, {
            "status": "ok" if alive and polling else "degraded" if alive else "dead",
            "poller_alive": alive,
            "last_poll_age_seconds": age,
            "device_source": self.poller.claim.source,
            "devices": devices,
            "tuning": self.tuning.state.value,
        }
