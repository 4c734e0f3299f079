"""aiohttp handlers and middlewares: parse, hand to the Ranker, render. Thin; no torch here.

Errors leave as TEI's `{"error": ..., "error_type": ...}` with the status of DESIGN.md."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kuberank_inference import payloads, reading, rendering
from kuberank_inference.engine.batching import BatchEngine
from kuberank_inference.engine.calibration import CalibrationReport
from kuberank_inference.engine.contracts import ModelInfo, PairsInput, TextsInput
from kuberank_inference.engine.fitting import BudgetInForce
from kuberank_inference.failures import (
    EmptyInputError,
    InferenceError,
    InferenceFailedError,
    InvalidRequestError,
    MalformedRequestError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from kuberank_inference.faults import OomInjection
from kuberank_inference.metrics import InferenceMetrics
from kuberank_inference.ranking import Ranker

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# (status, TEI error_type); subclasses first
_ERRORS: tuple[tuple[type[InferenceError], int, str], ...] = (
    (MalformedRequestError, 400, "Validation"),
    (EmptyInputError, 400, "Empty"),
    (PayloadTooLargeError, 413, "Validation"),
    (UnsupportedMediaTypeError, 415, "Validation"),
    (InvalidRequestError, 422, "Validation"),
    (OverloadedError, 429, "Overloaded"),
    (InferenceFailedError, 424, "Backend"),
    (NotReadyError, 503, "Unhealthy"),
    (UnauthorizedError, 401, "Unauthorized"),
)

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
INFERENCE_PATHS = frozenset({"/rerank", "/v1/rerank", "/v2/rerank", "/embed", "/v1/embeddings"})
HEALTH_FRESHNESS_SECONDS = 10.0
HEALTH_PROBE_TIMEOUT_SECONDS = 30.0
# Draining, a keep-alive connection that has sent nothing for this long is taken as abandoned
# and closed (a client about to reuse one sees it closed and opens another).
DRAIN_QUIET_S = 2.0


def status_of(error: InferenceError) -> tuple[int, str]:
    for kind, status, error_type in _ERRORS:
        if isinstance(error, kind):
            return status, error_type
    return 500, "Backend"


def error_response(status: int, error_type: str, message: str) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response(
        rendering.error_body(message, error_type), status=status, headers=headers
    )


@dataclass(slots=True)
class ServerState:
    """What the handlers share with the start-up and shutdown code."""

    metrics: InferenceMetrics
    payload_limit: int
    max_client_batch_size: int
    limits_info: dict[str, Any]
    api_token: str | None = None
    engine: BatchEngine | None = None
    faults: OomInjection | None = None
    budget: BudgetInForce | None = None
    calibration: CalibrationReport | None = None
    ranker: Ranker | None = None
    info: ModelInfo | None = None
    ready: bool = False
    draining: bool = False
    failure: str | None = None
    active_requests: int = 0
    last_request_at: float = 0.0  # time.monotonic() of the last API request's arrival

    def begin_drain(self) -> None:
        self.draining = True
        self.metrics.ready.set(0)

    async def drained(self, connections: Callable[[], int]) -> None:
        """Until no request is in flight and either no client holds a connection or none has
        sent a request for DRAIN_QUIET_S."""
        while True:  # polled: aiohttp signals no event when its last connection closes
            quiet = time.monotonic() - self.last_request_at >= DRAIN_QUIET_S
            if not self.active_requests and (not connections() or quiet):
                return
            await asyncio.sleep(0.05)


def _endpoint(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    if resource is None or getattr(request.match_info, "http_exception", None) is not None:
        return "other"
    return resource.canonical


def build_middlewares(state: ServerState) -> list[Callable[..., Awaitable[web.StreamResponse]]]:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = _endpoint(request)
        counted = endpoint in INFERENCE_PATHS
        started = time.monotonic()
        if counted:
            state.active_requests += 1
            state.last_request_at = started
            state.metrics.requests_in_flight.set(state.active_requests)
        status = 500
        try:
            response = await _answer(request, handler, state)
            status = response.status
            if state.draining:
                # Connection: close. A keep-alive client's next request opens a new
                # connection, which the Service sends to a replica that is not going away.
                response.force_close()
            return response
        except asyncio.CancelledError:
            status = 499  # the client closed the connection (nginx's convention)
            raise
        finally:
            if counted:
                state.active_requests -= 1
                state.metrics.requests_in_flight.set(state.active_requests)
            state.metrics.requests.labels(endpoint, str(status)).inc()
            state.metrics.request_duration.labels(endpoint).observe(time.monotonic() - started)

    return [observe]


async def _answer(request: web.Request, handler: Handler, state: ServerState) -> web.StreamResponse:
    try:
        if state.api_token is not None and request.path not in OPEN_PATHS:
            _authorize(request, state.api_token)
        return await handler(request)
    except InferenceError as error:
        status, error_type = status_of(error)
        if status == 424 or (status >= 500 and status != 503):
            log.warning("%s %s -> %d: %s", request.method, request.path, status, error.message)
        return error_response(status, error_type, error.message)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "Validation", reading.too_large(state.payload_limit))
    except web.HTTPException as http_error:
        if http_error.status >= 400:
            return error_response(http_error.status, "Validation", http_error.reason)
        raise
    except Exception:
        # a bug, never a client's doing: still TEI's JSON shape, and no traceback to the client
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "Backend", "internal server error; the server log has details")


def _authorize(request: web.Request, token: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise UnauthorizedError(
            "missing or wrong API token: send the header 'Authorization: Bearer <token>' with "
            "the token the server was started with (--api-token / --api-token-file)"
        )


class Handlers:
    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._limits = payloads.Limits(max_client_batch_size=state.max_client_batch_size)

    def routes(self, *, fault_injection: bool) -> list[web.RouteDef]:
        routes = [
            web.post("/rerank", self.tei_rerank),
            web.post("/v1/rerank", self.cohere_rerank_v1),
            web.post("/v2/rerank", self.cohere_rerank_v2),
            web.post("/embed", self.tei_embed),
            web.post("/v1/embeddings", self.openai_embeddings),
            web.get("/health", self.health),
            web.get("/ready", self.ready),
            web.get("/info", self.info),
            web.get("/metrics", self.metrics),
        ]
        if fault_injection:
            routes.append(web.post("/debug/inject-oom", self.inject_oom))
        return routes

    async def _body(self, request: web.Request) -> dict[str, Any]:
        return await reading.json_body(request, limit=self._state.payload_limit)

    def _ranker(self) -> Ranker:
        # Draining, the model still answers: a request that reaches a pod the Service has just
        # dropped (kube-proxy lags, keep-alive connections stay) is served, never refused.
        state = self._state
        if state.ranker is None or not state.ready:
            raise NotReadyError(
                state.failure or "the model is still loading; retry when /ready is 200"
            )
        return state.ranker

    def _check_dimensions(self, dimensions: int | None) -> None:
        info = self._state.info
        size = info.embedding_dimension if info is not None else None
        rendering.check_dimensions(dimensions, size, field="dimensions")

    async def tei_rerank(self, request: web.Request) -> web.Response:
        ranker = self._ranker()  # before the body: a request accepted before SIGTERM finishes
        parsed = payloads.parse_tei_rerank(await self._body(request), self._limits)
        scores = await ranker.rerank(
            query=parsed.query,
            texts=parsed.texts,
            truncate=parsed.truncate,
            direction=parsed.direction,
            raw_scores=parsed.raw_scores,
        )
        return web.json_response(
            rendering.render_tei_rerank(scores, parsed.texts, return_text=parsed.return_text)
        )

    async def _cohere(self, request: web.Request, version: str) -> web.Response:
        ranker = self._ranker()
        parsed = payloads.parse_cohere_rerank(
            await self._body(request), self._limits, version="1" if version == "1" else "2"
        )
        # Cohere truncates long documents instead of failing
        scores = await ranker.rerank(
            query=parsed.query,
            texts=parsed.documents,
            truncate=True,
            max_text_tokens=parsed.max_tokens_per_doc,
            field="documents",
        )
        return web.json_response(
            rendering.render_cohere_rerank(
                scores,
                parsed.documents,
                top_n=parsed.top_n,
                return_documents=parsed.return_documents,
                version=parsed.version,
            )
        )

    async def cohere_rerank_v1(self, request: web.Request) -> web.Response:
        return await self._cohere(request, "1")

    async def cohere_rerank_v2(self, request: web.Request) -> web.Response:
        return await self._cohere(request, "2")

    async def tei_embed(self, request: web.Request) -> web.Response:
        ranker = self._ranker()
        parsed = payloads.parse_tei_embed(await self._body(request), self._limits)
        self._check_dimensions(parsed.dimensions)
        embedded = await ranker.embed(
            texts=parsed.inputs,
            truncate=parsed.truncate,
            direction=parsed.direction,
            normalize=parsed.normalize,
        )
        vectors = [
            rendering.truncate_dimensions(v, parsed.dimensions, field="dimensions")
            for v in embedded.vectors
        ]
        return web.json_response(vectors)

    async def openai_embeddings(self, request: web.Request) -> web.Response:
        ranker = self._ranker()
        parsed = payloads.parse_openai_embed(await self._body(request), self._limits)
        self._check_dimensions(parsed.dimensions)
        embedded = await ranker.embed(texts=parsed.inputs, truncate=False, field="input")
        vectors = [
            rendering.truncate_dimensions(v, parsed.dimensions, field="dimensions")
            for v in embedded.vectors
        ]
        if parsed.dimensions is not None:
            vectors = await asyncio.to_thread(rendering.normalized_rows, vectors)
        info = self._state.info
        return web.json_response(
            rendering.render_openai_embeddings(
                vectors,
                model=info.model_id if info else "",
                prompt_tokens=embedded.num_tokens,
                encoding_format=parsed.encoding_format,
            )
        )

    async def health(self, request: web.Request) -> web.Response:
        state = self._state
        engine, info = state.engine, state.info
        if not state.ready or engine is None or info is None:
            raise NotReadyError(state.failure or "the model is still loading")
        recent = engine.last_success
        if recent is not None and time.monotonic() - recent < HEALTH_FRESHNESS_SECONDS:
            return web.json_response({"status": "ok"})
        probe: PairsInput | TextsInput
        if info.task == "rerank":
            probe = PairsInput("health", ["check"], truncate=True)
        else:
            probe = TextsInput(["health check"], truncate=True)
        try:
            async with asyncio.timeout(HEALTH_PROBE_TIMEOUT_SECONDS):
                await engine.run(probe)
        except TimeoutError:
            raise NotReadyError(
                f"a health forward pass took over {HEALTH_PROBE_TIMEOUT_SECONDS:.0f} s"
            ) from None
        except OverloadedError:
            return web.json_response({"status": "ok", "detail": "busy"})
        except InferenceError as error:
            raise NotReadyError(f"a health forward pass failed: {error.message}") from None
        return web.json_response({"status": "ok"})

    async def ready(self, request: web.Request) -> web.Response:
        state = self._state
        if state.draining:
            raise NotReadyError("shutting down")
        if not state.ready:
            raise NotReadyError(state.failure or "the model is still loading")
        return web.json_response({"status": "ready", **self._budget_facts()})

    def _budget_facts(self) -> dict[str, Any]:
        """The token budget in force, and the memory facts it was planned from."""
        state = self._state
        facts: dict[str, Any] = state.budget.as_json() if state.budget is not None else {}
        if state.engine is not None:
            facts["token_budget"] = state.engine.token_budget_ceiling
        return facts

    async def info(self, request: web.Request) -> web.Response:
        state = self._state
        info = state.info
        body: dict[str, Any] = {"version": _version(), **state.limits_info}
        if info is not None:
            body.update(
                model_id=info.model_id,
                model_source=info.source,
                task=info.task,
                architecture=info.architecture,
                device=info.device,
                dtype=info.dtype,
                max_input_length=info.max_input_length,
                attention=info.attention,
                padding_free=info.padding_free,
                embedding_dimension=info.embedding_dimension,
                score_activation=info.score_activation,
                model_type=({"reranker": {}} if info.task == "rerank" else {"embedding": {}}),
            )
            if info.precision is not None:
                body["precision"] = info.precision.as_json()
        body.update(self._budget_facts())
        if state.calibration is not None:
            body["calibration"] = state.calibration.as_json()
        body["ready"] = state.ready and not state.draining
        return web.json_response(body)

    async def metrics(self, request: web.Request) -> web.Response:
        payload = generate_latest(self._state.metrics.registry)
        response = web.Response(body=payload)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    async def inject_oom(self, request: web.Request) -> web.Response:
        count = payloads.parse_inject_oom(await self._body(request))
        faults = self._state.faults
        if faults is None or self._state.engine is None:
            raise NotReadyError("the model is still loading")
        faults.inject_oom(count)
        return web.json_response({"injected": count})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kuberank")
    except PackageNotFoundError:
        return "unknown"
