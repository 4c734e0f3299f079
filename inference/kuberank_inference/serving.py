"""Run the server until SIGTERM/SIGINT, then drain: /ready turns 503 (the pod leaves the
Service), requests that still arrive are answered with `Connection: close` (so keep-alive clients
reconnect to another replica), and once no client holds a connection, or none sent a request for
handlers.DRAIN_QUIET_S, or --shutdown-timeout has passed, the server closes and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

from aiohttp import web

from kuberank_inference.app import FATAL, STATE, ModelLoader, TokenizersFactory, create_app
from kuberank_inference.config import ServerConfig
from kuberank_inference.cpuquota import read_cpu_budget
from kuberank_inference.engine.contracts import Tokenizers

log = logging.getLogger(__name__)


def compile_in_process() -> None:
    """One CUDA process per server: torch.compile's default worker pool forks processes that
    inherit the device (pytorch/pytorch#134084); NVML lists each of them on the card, where they
    hold memory and make the sidecar's tuning see a second pod's processes. One compile thread
    compiles the few fused kernels in this process instead (an explicit value is kept)."""
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")


def load_torch_model(config: ServerConfig) -> ModelLoader:
    """The real loader; torch is imported only once the server runs (not for --help)."""

    def load() -> object:
        from kuberank_inference.sources import go_offline, resolve_model

        go_offline()
        compile_in_process()
        from kuberank_inference.torchmodel.settings import RunnerSettings

        source = resolve_model(config.model)
        settings = RunnerSettings(
            source=source,
            task=config.task,
            device=config.device,
            dtype=config.dtype,
            attention=config.attention,
            max_input_length=config.max_input_length,
            model_id=config.model_id,
            vram_safety_margin=config.vram_safety_margin,
            fused_gelu=config.fused_gelu,
            fused_norm=config.fused_norm,
            fp8_min_spearman=config.fp8_min_spearman,
            fp8_min_top_k_overlap=config.fp8_min_top_k_overlap,
        )
        if use_model_process(config):
            from kuberank_inference.torchmodel.process import ModelProcess

            return ModelProcess(settings, batches_in_flight=config.batches_in_flight)
        from kuberank_inference.torchmodel.checkpoints import out_of_memory_reported
        from kuberank_inference.torchmodel.runner import TorchRunner

        with out_of_memory_reported():
            return TorchRunner(settings)

    return load  # type: ignore[return-value]


def torch_tokenizers(config: ServerConfig) -> TokenizersFactory | None:
    """Tokenizer processes for a torch model (None: the engine's threads): `workers` of them,
    each with an equal share of the container's CPUs for the Rust tokenizer's own threads."""
    if config.tokenizer_processes == "off":
        return None

    def make(model: object, workers: int) -> Tokenizers | None:
        spec = getattr(model, "tokenizer_spec", None)
        if spec is None:  # a model without a Rust tokenizer to copy: threads
            return None
        from kuberank_inference.torchmodel.tokenizerpool import ProcessTokenizers

        started = time.perf_counter()
        tokenizers = ProcessTokenizers(
            spec(), workers=workers, threads_per_worker=max(1, read_cpu_budget() // workers)
        )
        log.info("%d tokenizer processes started in %.1f s", workers, time.perf_counter() - started)
        return tokenizers

    return make


def use_model_process(config: ServerConfig) -> bool:
    return config.model_process == "on"


async def serve(config: ServerConfig, *, load_model: ModelLoader | None = None) -> int:
    app = create_app(
        config,
        load_model=load_model or load_torch_model(config),
        make_tokenizers=torch_tokenizers(config),
    )
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        # compressed bodies are refused (415) unread: never inflate them in the parser
        auto_decompress=False,
        shutdown_timeout=config.shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    await site.start()
    log.info("listening on %s:%d", config.host, config.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    fatal = app[FATAL]
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(fatal.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    state = app[STATE]
    exit_code = 1 if fatal.is_set() else 0
    if exit_code == 0:
        log.info("shutting down: /ready is 503, waiting for %d requests", state.active_requests)
        state.begin_drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config.shutdown_timeout):
                await state.drained(lambda: len(runner.server.connections) if runner.server else 0)
        if state.active_requests:
            log.warning("%d requests still running at the shutdown timeout", state.active_requests)
    await runner.cleanup()
    log.info("stopped")
    return exit_code
