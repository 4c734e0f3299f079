"""Watch the GPU tuning each pod's sidecar reports, for the resources that ask for tuning.

Independent of autoscaling (and of --builtin-evaluator): every RerankerDeployment whose spec.gpu
sets a power limit or locked clocks, with the sidecar enabled, has its running pods' sidecar
/metrics read (through `scraping`, the only HTTP to pods). Resources without tuning are never
scraped here. When the per-pod states change, the resource is handed to `on_change` (the
controller's enqueue), so its TuningApplied condition is recomputed from `states(key)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from kuberank_operator.cluster import tasks
from kuberank_operator.cluster.scraping import PodTarget, new_session, scrape_tuning
from kuberank_operator.model.indexes import World
from kuberank_operator.model.observations import scraped_pods
from kuberank_operator.model.resources import Key
from kuberank_operator.model.signals import SIDECAR_METRICS_PORT, PodTuning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningWatchOptions:
    # Until every running pod reports a final state (applied, refused, ...): look again soon.
    unsettled_s: float = 2.0
    # Once settled: a restarted sidecar or a new pod is still seen within this.
    settled_s: float = 15.0
    tick_s: float = 0.5
    sidecar_port: int = SIDECAR_METRICS_PORT
    timeout_s: float = 5.0


@dataclass
class _Watched:
    states: dict[str, PodTuning] = field(default_factory=dict)
    next_at: float = 0.0


def settled(states: Mapping[str, PodTuning], *, pods: list[str]) -> bool:
    """Every pod reported, and none is still on its way (pending, or not asked yet)."""
    return all(p in states and states[p].state not in ("pending", "disabled") for p in pods)


class TuningWatch:
    def __init__(
        self,
        *,
        world: World,
        on_change: Callable[[Key], None],
        options: TuningWatchOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._world = world
        self._on_change = on_change
        self._options = options or TuningWatchOptions()
        self._clock = clock
        self._watched: dict[Key, _Watched] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def states(self, key: Key) -> Mapping[str, PodTuning] | None:
        """Per pod, the tuning its sidecar last reported; None when the resource is not watched."""
        watched = self._watched.get(key)
        return None if watched is None else dict(watched.states)

    async def start(self) -> None:
        """Start the loop (observe() may also be called on its own: it opens the session)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="kuberank-tuning-watch")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _wants_tuning(self, key: Key) -> bool:
        view = self._world.rrd(key)
        # An invalid spec (spec None) is the controller's to report.
        if view is None or view.deleting or view.spec is None:
            return False
        return view.spec.gpu.tuning_requested and view.spec.sidecar.enabled

    async def _loop(self) -> None:
        while True:
            wanted = {key for key in self._world.rrd_keys() if self._wants_tuning(key)}
            for gone in set(self._watched) - wanted:
                del self._watched[gone]
            now = self._clock()
            due = [
                k for k in sorted(wanted) if self._watched.setdefault(k, _Watched()).next_at <= now
            ]
            if due:
                await asyncio.gather(*(self._observe_guarded(key) for key in due))
            await asyncio.sleep(self._options.tick_s)

    async def _observe_guarded(self, key: Key) -> None:
        try:
            await self.observe(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("tuning watch of %s/%s failed; retrying", *key)
            self._watched.setdefault(key, _Watched()).next_at = (
                self._clock() + self._options.settled_s
            )

    async def observe(self, key: Key) -> bool:
        """Read the pods' tuning once; True when it changed (and on_change was called)."""
        if self._session is None:
            self._session = new_session(timeout_s=self._options.timeout_s)
        watched = self._watched.setdefault(key, _Watched())
        pods = scraped_pods(self._world.pods(key))
        targets = [PodTarget(pod=p.name, ip=p.ip) for p in pods]
        states = await scrape_tuning(
            self._session, targets, sidecar_port=self._options.sidecar_port
        )
        calm = settled(states, pods=[p.name for p in pods])
        wait = self._options.settled_s if calm else self._options.unsettled_s
        watched.next_at = self._clock() + wait
        if states == watched.states:
            return False
        logger.info(
            "%s/%s: GPU tuning per pod: %s",
            *key,
            ", ".join(f"{p}={t.state}" for p, t in sorted(states.items())) or "none reported",
        )
        watched.states = states
        self._on_change(key)
        return True
