"""The operator's HTTP endpoint: /metrics, /healthz (liveness) and /readyz (readiness)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class OpsServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        registry: CollectorRegistry,
        healthy: Callable[[], bool],
        unready_reason: Callable[[], str | None],
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._healthy = healthy
        self._unready_reason = unready_reason
        self._runner: web.AppRunner | None = None
        self.bound_port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        if self._healthy():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "reconcile workers stopped"}, status=503)

    async def _readyz(self, _: web.Request) -> web.Response:
        reason = self._unready_reason()
        if reason is None:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": reason}, status=503)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
