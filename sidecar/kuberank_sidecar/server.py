"""HTTP endpoints on :9400: /metrics, /healthz, /tuning. Handlers only render what is held."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from kuberank_sidecar.collection import SidecarCollector
from kuberank_sidecar.exposition import CONTENT_TYPE, render_text
from kuberank_sidecar.runtime import Sidecar

SIDECAR_KEY = web.AppKey("sidecar", Sidecar)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    body = render_text(registry.collect())
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    healthy, details = request.app[SIDECAR_KEY].health()
    return web.json_response(details, status=200 if healthy else 503)


async def tuning(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIDECAR_KEY].tuning.report())


def build_app(sidecar: Sidecar, *, manage_lifecycle: bool = True) -> web.Application:
    """The aiohttp app; with manage_lifecycle it starts the sidecar and restores tuning on exit."""
    app = web.Application()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SidecarCollector(sidecar.view, sidecar.config.export))
    app[SIDECAR_KEY] = sidecar
    app[REGISTRY_KEY] = registry
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/tuning", tuning)
    if manage_lifecycle:

        async def on_startup(app: web.Application) -> None:
            sidecar.start()

        async def on_cleanup(app: web.Application) -> None:
            sidecar.stop()

        app.on_startup.append(on_startup)
        app.on_cleanup.append(on_cleanup)
    return app
