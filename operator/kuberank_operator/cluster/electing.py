"""The leader-election loop: hold the Lease while alive, hand work on and off with it.

Renews every third of the lease; a leader that has not renewed for two thirds of it steps down
on its own, before any standby may take over. A clean stop releases the Lease at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kuberank_operator.cluster import leases, tasks
from kuberank_operator.cluster.actuator import Actuator
from kuberank_operator.cluster.kubeapi import ApiError, KubeApi
from kuberank_operator.cluster.outcomes import Refused

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElectionOptions:
    namespace: str
    name: str
    identity: str
    lease_seconds: int = 15

    @property
    def renew_every(self) -> float:
        return self.lease_seconds / 3

    @property
    def renew_deadline(self) -> float:
        return self.lease_seconds * 2 / 3


class Elector:
    def __init__(
        self,
        *,
        api: KubeApi,
        actuator: Actuator,
        options: ElectionOptions,
        on_lead: Callable[[], Awaitable[None]],
        on_follow: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._actuator = actuator
        self._options = options
        self._on_lead = on_lead
        self._on_follow = on_follow
        self._clock = clock
        self._observation: leases.Observation | None = None
        self._renewed_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.leading = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="leader-election")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        if self.leading:
            await self._follow("stopping")
            await self._release()

    async def _loop(self) -> None:
        opts = self._options
        logger.info(
            "leader election on Lease %s/%s as %s", opts.namespace, opts.name, opts.identity
        )
        while True:
            try:
                await self._round()
            except ApiError as exc:
                logger.warning("leader election: %s", exc)
            overdue = self._renewed_at is not None and (
                self._clock() - self._renewed_at > opts.renew_deadline
            )
            if self.leading and overdue:
                await self._follow("could not renew the Lease in time")
            await asyncio.sleep(opts.renew_every)

    async def _round(self) -> None:
        opts = self._options
        body = await self._api.read_lease(namespace=opts.namespace, name=opts.name)
        record = leases.parse_lease(body) if body is not None else None
        now = self._clock()
        self._observation = leases.observe(self._observation, record, now=now)
        decision = leases.decide(
            self._observation, me=opts.identity, now=now, duration_s=opts.lease_seconds
        )
        if decision == "wait":
            if self.leading:
                await self._follow(f"the Lease is held by {record.holder if record else '?'}")
            return
        written = await self._actuator.write_lease(
            leases.lease_body(
                name=opts.name,
                namespace=opts.namespace,
                holder=opts.identity,
                duration_s=opts.lease_seconds,
                previous=record,
                now=leases.micro_time(),
            )
        )
        if isinstance(written, Refused):
            return  # another replica wrote first; look again next round
        self._renewed_at = self._clock()
        if not self.leading:
            self.leading = True
            logger.info("leading: this replica holds Lease %s/%s", opts.namespace, opts.name)
            await self._on_lead()

    async def _follow(self, why: str) -> None:
        self.leading = False
        self._renewed_at = None
        logger.warning("standing by: %s", why)
        await self._on_follow()

    async def _release(self) -> None:
        """Leave the Lease without a holder, so a standby takes over without waiting it out."""
        opts = self._options
        with contextlib.suppress(ApiError):
            body = await self._api.read_lease(namespace=opts.namespace, name=opts.name)
            if body is None:
                return
            record = leases.parse_lease(body)
            if record.holder != opts.identity:
                return
            released = leases.lease_body(
                name=opts.name,
                namespace=opts.namespace,
                holder="",
                duration_s=opts.lease_seconds,
                previous=record,
                now=leases.micro_time(),
            )
            await self._actuator.write_lease(released)
            logger.info("released Lease %s/%s", opts.namespace, opts.name)
