"""Apply the tuning plan through the NVML backend, journal it, and restore the card on exit."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kuberank_sidecar.devices import DeviceTree, GpuIdentity, NvmlBackend, NvmlError, NvmlErrorKind
from kuberank_sidecar.ownership import DeviceClaim
from kuberank_sidecar.records import OwnedDevice
from kuberank_sidecar.tuning_plans import (
    ClockRange,
    GpuFacts,
    GpuTuningStatus,
    JournalEntry,
    Refusal,
    TuningPlan,
    TuningRequest,
    TuningState,
    plan_tuning,
)

log = logging.getLogger(__name__)


def _clock(value: Any) -> ClockRange | None:
    return ClockRange(int(value[0]), int(value[1])) if value else None


def load_journal(path: Path | None) -> dict[str, JournalEntry]:
    """Entries a previous sidecar wrote and never cleared; unreadable journals are reported."""
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {
            uuid: JournalEntry(
                previous_power_limit_w=float(entry["previous_power_limit_w"]),
                power_limit_w=entry.get("power_limit_w"),
                gpu_clocks=_clock(entry.get("gpu_clocks")),
                memory_clocks=_clock(entry.get("memory_clocks")),
                pid=int(data.get("pid", 0)),
                written_at=float(data.get("written_at", 0.0)),
            )
            for uuid, entry in data["gpus"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("tuning journal %s is unreadable (%s); ignoring it", path, exc)
        return {}


def save_journal(
    path: Path | None, entries: dict[str, JournalEntry], *, pid: int, now: float
) -> None:
    if path is None:
        return
    if not entries:
        path.unlink(missing_ok=True)
        return
    payload = {
        "version": 1,
        "pid": pid,
        "written_at": now,
        "gpus": {
            uuid: {
                "previous_power_limit_w": e.previous_power_limit_w,
                "power_limit_w": e.power_limit_w,
                "gpu_clocks": e.gpu_clocks.as_list() if e.gpu_clocks else None,
                "memory_clocks": e.memory_clocks.as_list() if e.memory_clocks else None,
            }
            for uuid, e in entries.items()
        },
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)


def gpu_facts(
    backend: NvmlBackend,
    gpu: GpuIdentity,
    *,
    owned: list[OwnedDevice],
    claim: DeviceClaim,
    tree: DeviceTree,
) -> GpuFacts:
    mig = next((d.mig for d in owned if d.gpu.uuid == gpu.uuid and d.mig is not None), None)
    try:
        processes: int | None = backend.compute_processes(gpu)
    except NvmlError as exc:
        log.info("GPU %s: cannot count its CUDA processes (%s)", gpu.uuid, exc)
        processes = None
    return GpuFacts(
        gpu_uuid=gpu.uuid,
        limits=backend.tuning_limits(gpu),
        mig_device=None if mig is None else mig.uuid,
        mig_enabled=any(m.parent.uuid == gpu.uuid for m in tree.mig_devices),
        shared=gpu.uuid in claim.shared_ids or (mig is not None and mig.uuid in claim.shared_ids),
        sharing_known=claim.sharing_known,
        compute_processes=processes,
    )


class TuningController:
    """Owns the card's settings for this pod: plan, apply once, restore on exit."""

    def __init__(
        self,
        backend: NvmlBackend,
        request: TuningRequest,
        *,
        journal_path: Path | None,
        assume_exclusive: bool = False,
        pid: int | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self._request = request
        self._journal_path = journal_path
        self._assume_exclusive = assume_exclusive
        self._pid = os.getpid() if pid is None else pid
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._state = TuningState.PENDING if request.enabled else TuningState.DISABLED
        self._gpus: dict[str, GpuIdentity] = {}
        self._plans: dict[str, TuningPlan] = {}
        self._status: dict[str, GpuTuningStatus] = {}
        self._journal: dict[str, JournalEntry] = {}
        self._leftovers: dict[str, JournalEntry] = {}

    @property
    def state(self) -> TuningState:
        with self._lock:
            return self._state

    def plan(
        self, owned: list[OwnedDevice], claim: DeviceClaim, tree: DeviceTree
    ) -> list[tuple[GpuIdentity, TuningPlan]]:
        """A plan per physical GPU of the pod, checked against the card; changes nothing."""
        leftovers = load_journal(self._journal_path)
        plans = []
        for gpu in {d.gpu.uuid: d.gpu for d in owned}.values():
            facts = gpu_facts(self._backend, gpu, owned=owned, claim=claim, tree=tree)
            plans.append(
                (
                    gpu,
                    plan_tuning(
                        self._request,
                        facts,
                        journal=leftovers.get(gpu.uuid),
                        assume_exclusive=self._assume_exclusive,
                    ),
                )
            )
        return plans

    def on_devices(self, owned: list[OwnedDevice], claim: DeviceClaim, tree: DeviceTree) -> None:
        """Called after each poll: tunes once, as soon as the pod's devices are known."""
        with self._lock:
            if self._plans or not owned:
                return
            if not self._request.enabled and not load_journal(self._journal_path):
                for gpu in {d.gpu.uuid: d.gpu for d in owned}.values():
                    self._gpus[gpu.uuid] = gpu
                    self._plans[gpu.uuid] = TuningPlan(gpu_uuid=gpu.uuid)
                    self._status[gpu.uuid] = GpuTuningStatus(TuningState.DISABLED)
                return
            try:
                plans = self.plan(owned, claim, tree)
            except NvmlError as exc:
                log.warning("tuning could not read the GPU's limits (%s); will retry", exc)
                return
            leftovers = load_journal(self._journal_path)
            for gpu, plan in plans:
                self._gpus[gpu.uuid] = gpu
                self._plans[gpu.uuid] = plan
                for note in plan.inherited:
                    log.warning("GPU %s: %s", gpu.uuid, note)
                if gpu.uuid in leftovers:
                    self._journal[gpu.uuid] = leftovers[gpu.uuid]
                    self._leftovers[gpu.uuid] = leftovers[gpu.uuid]
                self._status[gpu.uuid] = self._apply(gpu, plan)
            self._state = _overall(self._request, list(self._status.values()))

    def _apply(self, gpu: GpuIdentity, plan: TuningPlan) -> GpuTuningStatus:
        if not self._request.enabled:
            if gpu.uuid in self._journal:
                # A predecessor of this pod left settings and tuning is now off: put them back.
                self._restore_gpu(gpu, plan)
                return GpuTuningStatus(
                    TuningState.RESTORED, message="restored a predecessor's settings"
                )
            return GpuTuningStatus(TuningState.DISABLED)
        if plan.refusal is not None:
            log.warning("tuning refused on GPU %s: %s", gpu.uuid, plan.message)
            return GpuTuningStatus(TuningState.REFUSED, plan.refusal.value, plan.message)
        if gpu.uuid not in self._journal:
            self._journal[gpu.uuid] = plan.journal_entry(pid=self._pid, now=self._wall_clock())
        else:
            # Keep the predecessor's "previous" values: they are what the card had originally.
            old = self._journal[gpu.uuid]
            self._journal[gpu.uuid] = JournalEntry(
                previous_power_limit_w=old.previous_power_limit_w,
                power_limit_w=plan.set_power_limit_w,
                gpu_clocks=plan.lock_gpu_clocks or old.gpu_clocks,
                memory_clocks=plan.lock_memory_clocks or old.memory_clocks,
                pid=self._pid,
                written_at=self._wall_clock(),
            )
        self._write_journal()
        done: list[str] = []
        previous = self._leftovers.get(gpu.uuid)
        try:
            if plan.set_power_limit_w is not None:
                self._backend.set_power_limit(gpu, watts=plan.set_power_limit_w)
                done.append("power")
            if plan.lock_gpu_clocks is not None:
                self._backend.lock_gpu_clocks(
                    gpu, min_mhz=plan.lock_gpu_clocks.min_mhz, max_mhz=plan.lock_gpu_clocks.max_mhz
                )
                done.append("gpu_clocks")
            if plan.lock_memory_clocks is not None:
                self._backend.lock_memory_clocks(
                    gpu,
                    min_mhz=plan.lock_memory_clocks.min_mhz,
                    max_mhz=plan.lock_memory_clocks.max_mhz,
                )
        except NvmlError as exc:
            self._roll_back(gpu, plan, done=done, previous=previous)
            if exc.kind is NvmlErrorKind.NO_PERMISSION:
                message = (
                    f"tuning denied on GPU {gpu.uuid}: {exc.operation} needs CAP_SYS_ADMIN in the "
                    "sidecar container (securityContext.capabilities.add: [SYS_ADMIN]); "
                    "telemetry continues without tuning"
                )
                log.error("%s", message)
                return GpuTuningStatus(TuningState.DENIED, "no_permission", message)
            message = (
                f"tuning failed on GPU {gpu.uuid} after {done or 'nothing'}: {exc}; rolled back"
            )
            log.error("%s", message)
            return GpuTuningStatus(TuningState.FAILED, exc.kind.value, message)
        log.info("tuning applied on GPU %s: %s", gpu.uuid, plan.to_json())
        return GpuTuningStatus(TuningState.APPLIED, message=plan.message)

    def _roll_back(
        self, gpu: GpuIdentity, plan: TuningPlan, *, done: list[str], previous: JournalEntry | None
    ) -> None:
        """Undo only the steps that took effect; a predecessor's journal entry stays as it was."""
        try:
            if "power" in done and plan.restore_power_limit_w is not None:
                self._backend.set_power_limit(gpu, watts=plan.restore_power_limit_w)
            if "gpu_clocks" in done:
                self._backend.reset_gpu_clocks(gpu)
        except NvmlError as exc:
            log.error("could not roll back tuning on GPU %s: %s", gpu.uuid, exc)
            return
        if previous is None:
            self._journal.pop(gpu.uuid, None)
        else:
            self._journal[gpu.uuid] = previous
        self._write_journal()

    def _restore_gpu(self, gpu: GpuIdentity, plan: TuningPlan) -> bool:
        """Put the card back; True when every step worked (the journal entry is then cleared)."""
        ok = True
        entry = self._journal.get(gpu.uuid)
        steps: list[tuple[str, Callable[[], None]]] = []
        if plan.restore_power_limit_w is not None and (
            plan.set_power_limit_w is not None or (entry is not None and entry.power_limit_w)
        ):
            restore_w = plan.restore_power_limit_w
            steps.append(
                ("power limit", lambda: self._backend.set_power_limit(gpu, watts=restore_w))
            )
        if plan.reset_gpu_clocks:
            steps.append(("graphics clocks", lambda: self._backend.reset_gpu_clocks(gpu)))
        if plan.reset_memory_clocks:
            steps.append(("memory clocks", lambda: self._backend.reset_memory_clocks(gpu)))
        for what, step in steps:
            try:
                step()
            except NvmlError as exc:
                ok = False
                log.error("could not restore the %s of GPU %s: %s", what, gpu.uuid, exc)
        if ok:
            self._journal.pop(gpu.uuid, None)
            self._write_journal()
        return ok

    def _write_journal(self) -> None:
        try:
            save_journal(self._journal_path, self._journal, pid=self._pid, now=self._wall_clock())
        except OSError as exc:
            log.warning("could not write the tuning journal %s: %s", self._journal_path, exc)

    def restore(self) -> None:
        """Restore every GPU this sidecar tuned; safe to call more than once."""
        with self._lock:
            for uuid, status in list(self._status.items()):
                if status.state is not TuningState.APPLIED:
                    continue
                if self._restore_gpu(self._gpus[uuid], self._plans[uuid]):
                    log.info("tuning restored on GPU %s", uuid)
                    self._status[uuid] = GpuTuningStatus(
                        TuningState.RESTORED, message="restored on exit"
                    )
            if self._status:
                self._state = _overall(self._request, list(self._status.values()))

    def plans(self) -> dict[str, TuningPlan]:
        with self._lock:
            return dict(self._plans)

    def statuses(self) -> dict[str, GpuTuningStatus]:
        with self._lock:
            return dict(self._status)

    def report(self) -> dict[str, Any]:
        """The body of GET /tuning."""
        with self._lock:
            request = self._request
            return {
                "state": self._state.value,
                "request": {
                    "power_limit_watts": request.power_limit_w,
                    "gpu_locked_clocks_mhz": request.gpu_clocks.as_list()
                    if request.gpu_clocks
                    else None,
                    "memory_locked_clocks_mhz": (
                        request.memory_clocks.as_list() if request.memory_clocks else None
                    ),
                },
                "gpus": [
                    {
                        "uuid": uuid,
                        "state": status.state.value,
                        "reason": status.reason,
                        "message": status.message,
                        "plan": self._plans[uuid].to_json(),
                    }
                    for uuid, status in self._status.items()
                ],
            }


def _overall(request: TuningRequest, statuses: list[GpuTuningStatus]) -> TuningState:
    """The pod's tuning state: the worst of its GPUs'."""
    order = [
        TuningState.FAILED,
        TuningState.DENIED,
        TuningState.REFUSED,
        TuningState.APPLIED,
        TuningState.RESTORED,
        TuningState.DISABLED,
    ]
    for state in order:
        if any(s.state is state for s in statuses):
            return state
    return TuningState.PENDING if request.enabled else TuningState.DISABLED


__all__ = ["GpuTuningStatus", "Refusal", "TuningController", "load_journal", "save_journal"]
