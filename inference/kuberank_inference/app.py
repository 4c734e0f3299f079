"""The aiohttp application: routes, and the start-up that loads the model off the event loop,
warms it up, fits the token budget into device memory, starts the engine and turns ready."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from kuberank_inference import handshake
from kuberank_inference.config import ServerConfig, read_api_token
from kuberank_inference.cpuquota import default_tokenization_workers, read_cpu_budget
from kuberank_inference.engine.batching import BatchEngine, EngineSettings
from kuberank_inference.engine.calibration import (
    CalibrationReport,
    MeasureLimits,
    Setting,
    calibrate,
    not_calibrated,
    plan_grid,
)
from kuberank_inference.engine.contracts import ModelRunner, Tokenizers
from kuberank_inference.engine.fitting import BudgetInForce, StartupMemoryError, fit_token_budget
from kuberank_inference.failures import DeviceOutOfMemoryError
from kuberank_inference.faults import OomInjection
from kuberank_inference.handlers import Handlers, ServerState, build_middlewares
from kuberank_inference.metrics import InferenceMetrics
from kuberank_inference.quality import PrecisionReport
from kuberank_inference.ranking import Ranker

log = logging.getLogger(__name__)

STATE: web.AppKey[ServerState] = web.AppKey("state", ServerState)
FATAL: web.AppKey[asyncio.Event] = web.AppKey("fatal", asyncio.Event)


class ServableModel(ModelRunner, Protocol):
    """A model runner that can also warm up and report device facts at start-up."""

    def warm_up(self, *, max_batch_tokens: int) -> None: ...

    def activation_bytes_per_token(self, *, tokens: int) -> float: ...

    def resident_bytes(self) -> int: ...

    def free_device_bytes(self) -> int | None: ...

    def device_uuids(self) -> list[str]: ...

    def close(self) -> None: ...


ModelLoader = Callable[[], ServableModel]
# where the loaded model's requests are tokenized, given the number of workers; None: threads
TokenizersFactory = Callable[[ServableModel, int], Tokenizers | None]


def engine_settings(config: ServerConfig, *, cpus: int | None = None) -> EngineSettings:
    """The engine's settings; tokenizer workers 0 means one per CPU of the container's quota."""
    workers = config.tokenization_workers or default_tokenization_workers(
        read_cpu_budget() if cpus is None else cpus
    )
    return EngineSettings(
        max_batch_tokens=config.max_batch_tokens,
        max_batch_requests=config.max_batch_requests,
        max_concurrent_pairs=config.max_concurrent_pairs,
        tokenization_workers=workers,
        oom_recovery_seconds=config.oom_recovery_seconds,
        batches_in_flight=config.batches_in_flight,
    )


def create_app(
    config: ServerConfig,
    *,
    load_model: ModelLoader,
    make_tokenizers: TokenizersFactory | None = None,
) -> web.Application:
    settings = engine_settings(config)
    metrics = InferenceMetrics()
    metrics.ready.set(0)
    metrics.token_budget.set(settings.max_batch_tokens)
    state = ServerState(
        metrics=metrics,
        payload_limit=config.payload_limit,
        max_client_batch_size=config.max_client_batch_size,
        api_token=read_api_token(config),
        limits_info={
            "max_batch_tokens": settings.max_batch_tokens,
            "max_batch_requests": settings.max_batch_requests,
            "max_concurrent_pairs": settings.max_concurrent_pairs,
            "max_client_batch_size": config.max_client_batch_size,
            "payload_limit": config.payload_limit,
            "tokenization_workers": settings.tokenization_workers,
            "batches_in_flight": settings.batches_in_flight,
            "vram_safety_margin": config.vram_safety_margin,
            "auth": config.api_token is not None or config.api_token_file is not None,
        },
    )
    app = web.Application(
        client_max_size=config.payload_limit, middlewares=build_middlewares(state)
    )
    app[STATE] = state
    app[FATAL] = asyncio.Event()
    app.add_routes(Handlers(state).routes(fault_injection=config.debug_fault_injection))
    bring_up: list[asyncio.Task[None]] = []
    loaded: list[ServableModel] = []

    async def on_startup(app: web.Application) -> None:
        bring_up.append(
            asyncio.create_task(
                _bring_up(app, config, settings, load_model, loaded, make_tokenizers)
            )
        )

    async def on_cleanup(app: web.Application) -> None:
        for task in bring_up:
            task.cancel()
        await asyncio.gather(*bring_up, return_exceptions=True)
        if state.engine is not None:
            await state.engine.stop()
        for model in loaded:
            await asyncio.to_thread(model.close)

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _bring_up(
    app: web.Application,
    config: ServerConfig,
    settings: EngineSettings,
    load_model: ModelLoader,
    loaded: list[ServableModel],
    make_tokenizers: TokenizersFactory | None,
) -> None:
    state = app[STATE]
    try:
        model = await asyncio.to_thread(load_model)
        loaded.append(model)
        if config.debug_fault_injection:
            model = state.faults = OomInjection(model)
        info = model.info
        _warn_below_one_sequence(settings.max_batch_tokens, info.max_input_length)
        grid = (
            plan_grid(
                budgets=config.calibration_budgets,
                batches_in_flight=config.calibration_batches_in_flight,
                fixed_budget=config.fixed_max_batch_tokens,
                fixed_batches_in_flight=config.fixed_batches_in_flight,
                floor=info.max_input_length,
            )
            if config.calibrates()
            else None
        )
        budget = await asyncio.to_thread(
            fit_token_budget,
            model,
            configured=max(grid.budgets) if grid else settings.max_batch_tokens,
            safety_margin=config.vram_safety_margin,
            batches_in_flight=min(grid.batches_in_flight) if grid else settings.batches_in_flight,
        )
        configured = Setting(settings.max_batch_tokens, settings.batches_in_flight)
        if grid is None:
            report = not_calibrated(
                setting=Setting(budget.token_budget, settings.batches_in_flight),
                device_name=info.device_name,
                state="off" if not config.calibrates() else "fixed",
                reason=(
                    "calibration off (--calibration off, or auto on CPU)"
                    if not config.calibrates()
                    else "--max-batch-tokens and --batches-in-flight are both given"
                ),
            )
        else:
            report = await asyncio.to_thread(
                calibrate,
                model,
                grid=grid,
                fits=lambda point: budget.fits(
                    tokens=point.max_batch_tokens, batches_in_flight=point.batches_in_flight
                ),
                limits=MeasureLimits(
                    seconds=config.calibration_seconds,
                    max_batch_requests=settings.max_batch_requests,
                ),
                tolerance=config.calibration_tolerance,
                # the budget was fitted at the grid's fewest batches in flight
                fallback=Setting(
                    min(budget.token_budget, configured.max_batch_tokens),
                    min(grid.batches_in_flight),
                ),
                clock=time.perf_counter,
            )
            budget = _calibrated_budget(budget, report)
        chosen = report.choice.setting
        fitted = dataclasses.replace(
            settings,
            max_batch_tokens=budget.token_budget,
            batches_in_flight=chosen.batches_in_flight,
        )
        tokenizers = None
        if make_tokenizers is not None:
            tokenizers = await asyncio.to_thread(
                make_tokenizers, model, fitted.tokenization_workers
            )
        engine = BatchEngine(
            runner=model,
            settings=fitted,
            metrics=state.metrics,
            tokenizers=tokenizers,
        )
        state.budget = budget
        state.calibration = report
        state.limits_info.update(
            max_batch_tokens=engine.token_budget_ceiling,
            batches_in_flight=fitted.batches_in_flight,
            tokenizer_processes="on" if tokenizers is not None else "off",
        )
        state.metrics.record_calibration(report)
        state.metrics.record_budget(
            ceiling=engine.token_budget_ceiling,
            reason=budget.reason,
            free_bytes=budget.free_bytes,
        )
        engine.start()
        state.engine = engine
        state.info = info
        state.ranker = Ranker(engine=engine, info=info)
        state.metrics.watch_device_memory(model.device_memory)
        state.metrics.record_precision(
            info.precision or PrecisionReport(info.dtype, info.dtype, "not_requested", "")
        )
        _write_handshake(config, model)
    except asyncio.CancelledError:
        raise
    except (StartupMemoryError, DeviceOutOfMemoryError) as error:
        message = str(error)
        if isinstance(error, DeviceOutOfMemoryError):  # loading the weights or self-checking
            message = (
                f"not enough device memory to load the model and check it: {error.detail}. "
                "Free memory on the device or run on a device with more memory"
            )
        log.error("%s", message)  # the whole story is in the message: no traceback
        state.failure = f"the model could not be started: {message}"
        app[FATAL].set()
        return
    except Exception as error:
        log.exception("the model could not be brought up")
        state.failure = f"the model could not be loaded: {error}"
        app[FATAL].set()
        return
    # the ~500k objects of torch, transformers and the model never die: keep them out of the
    # collector, whose full passes otherwise stop every thread for ~0.1-0.2 s (tail latency)
    gc.collect()
    gc.freeze()
    state.ready = True
    state.metrics.ready.set(1)
    log.info(
        "ready: %s (%s) on %s as %s, attention %s, token budget %d, %d batches in flight",
        info.model_id,
        info.task,
        info.device,
        info.dtype,
        info.attention,
        engine.token_budget_ceiling,
        fitted.batches_in_flight,
    )


def _calibrated_budget(budget: BudgetInForce, report: CalibrationReport) -> BudgetInForce:
    """The fitted budget with the calibration's choice in force (never above what fitted)."""
    if report.state != "calibrated":
        tokens = min(budget.token_budget, report.choice.setting.max_batch_tokens)
        return dataclasses.replace(budget, token_budget=tokens)
    return dataclasses.replace(
        budget, token_budget=report.choice.setting.max_batch_tokens, reason="calibrated"
    )


def _warn_below_one_sequence(configured: int, floor: int) -> None:
    if configured < floor:
        log.warning(
            "--max-batch-tokens %d is below the max input length %d: long sequences run alone",
            configured,
            floor,
        )


def _write_handshake(config: ServerConfig, model: ServableModel) -> None:
    environ = dict(os.environ)
    document = handshake.handshake_document(
        pid=os.getpid(),
        device=model.info.device,
        environ=environ,
        uuids=handshake.device_uuids(
            environ=environ, framework_uuids=model.device_uuids(), device=model.info.device
        ),
        now=handshake.current_time(),
    )
    handshake.write_handshake(
        config.device_handshake_file, document, explicit=config.device_handshake_file_explicit
    )
