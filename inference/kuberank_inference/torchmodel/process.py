"""The model in a process of its own: `ModelProcess` is a ModelRunner whose batches run in a child
process that owns torch and the device, so kernel launches never wait for the GIL behind HTTP
parsing and tokenization (measured on an H100: that contention cost the base shape 40 % of its
throughput). Tokenization stays in the server process; batches travel as three numpy arrays
through a pipe, results come back as floats, in order, two batches deep.

This module does not import torch; the child imports the runner after it starts.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import multiprocessing
import signal
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

from kuberank_inference.engine.contracts import (
    Abandoned,
    BatchHandle,
    DeviceMemory,
    ModelInfo,
    ModelInput,
    Output,
    TokenizedSequence,
)
from kuberank_inference.failures import DeviceOutOfMemoryError
from kuberank_inference.torchmodel.settings import RunnerSettings
from kuberank_inference.torchmodel.tokenizing import (
    Encoded,
    TokenizerSpec,
    pack,
    unpack,
)

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.0005
_START_TIMEOUT_SECONDS = 1800.0


class ModelProcessError(RuntimeError):
    """The model process failed to start, or died."""


@dataclass(frozen=True, slots=True)
class _Started:
    """What the child reports once the model is loaded and warm."""

    info: ModelInfo
    tokenizer: TokenizerSpec
    resident_bytes: int
    device_uuids: list[str]
    memory: DeviceMemory | None


@dataclass(frozen=True, slots=True)
class _Handle:
    number: int
    tokens: int


class ModelProcess:
    """A ModelRunner whose forward passes run in a child process."""

    def __init__(self, settings: RunnerSettings, *, batches_in_flight: int = 2) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=True)
        self._process = context.Process(
            target=_child_main,
            args=(child_conn, settings, batches_in_flight),
            name="kuberank-model",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        self._send_lock = threading.Lock()
        self._numbers = 0
        self._replies: dict[int, tuple[Any, ...]] = {}
        if not self._conn.poll(_START_TIMEOUT_SECONDS):
            self.close()
            raise ModelProcessError("the model process did not start in time")
        message = self._receive()
        if message[0] != "started":
            self.close()
            raise ModelProcessError(f"the model process failed to start: {message[1]}")
        started = cast(_Started, message[1])
        self._started = started
        self._memory = started.memory
        self._tokenizer = self.tokenizer_spec().build()

    # --- ModelRunner -------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._started.info

    def encode(
        self, request: ModelInput, *, abandoned: Abandoned | None = None
    ) -> list[TokenizedSequence]:
        return list(self._tokenizer.encode(request, abandoned=abandoned))

    def start_batch(self, sequences: Sequence[TokenizedSequence]) -> BatchHandle:
        encoded = cast(Sequence[Encoded], sequences)
        self._numbers += 1
        handle = _Handle(self._numbers, sum(seq.num_tokens for seq in encoded))
        self._send(("batch", handle.number, pack(encoded)))
        return handle

    def finish_batch(self, handle: BatchHandle) -> list[Output]:
        return cast(list[Output], self._reply(cast(_Handle, handle)))

    def _reply(self, wanted: _Handle) -> Any:
        while wanted.number not in self._replies:
            message = self._receive()
            self._replies[message[1]] = message
        reply = self._replies.pop(wanted.number)
        kind = reply[0]
        if kind == "done":
            self._memory = reply[3]
            return reply[2]
        if kind == "oom":
            raise DeviceOutOfMemoryError(tokens=wanted.tokens, detail=str(reply[2]))
        raise ModelProcessError(f"the model process failed a batch: {reply[2]}")

    def device_memory(self) -> DeviceMemory | None:
        return self._memory

    # --- start-up facts (measured in the child, one request at a time) -----------------------

    def _ask(self, kind: str, value: int) -> Any:
        """One start-up step in the child; DeviceOutOfMemoryError as a batch would raise it."""
        self._numbers += 1
        self._send((kind, self._numbers, value))
        return self._reply(_Handle(self._numbers, value))

    def warm_up(self, *, max_batch_tokens: int) -> None:
        self._ask("warm_up", max_batch_tokens)

    def activation_bytes_per_token(self, *, tokens: int) -> float:
        return float(self._ask("measure", tokens))

    def free_device_bytes(self) -> int | None:
        free = self._ask("free", 0)
        return None if free is None else int(free)

    def resident_bytes(self) -> int:
        return self._started.resident_bytes

    def tokenizer_spec(self) -> TokenizerSpec:
        return self._started.tokenizer

    def device_uuids(self) -> list[str]:
        return list(self._started.device_uuids)

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self._send(("stop",))
            self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=10)
        self._conn.close()

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _receive(self) -> tuple[Any, ...]:
        try:
            return cast(tuple[Any, ...], self._conn.recv())
        except (EOFError, OSError) as error:
            code = self._process.exitcode
            raise ModelProcessError(f"the model process died (exit code {code})") from error


# --- the child ---------------------------------------------------------------------------------


def _child_main(conn: Connection, settings: RunnerSettings, batches_in_flight: int) -> None:
    # the parent decides when to stop; a terminal's Ctrl-C must not kill batches in flight
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        from kuberank_inference.sources import go_offline

        go_offline()
        from kuberank_inference.torchmodel.checkpoints import out_of_memory_reported
        from kuberank_inference.torchmodel.runner import TorchRunner

        with out_of_memory_reported():
            runner = TorchRunner(settings)  # warmed up and measured on the parent's requests
        started = _Started(
            info=runner.info,
            tokenizer=runner.tokenizer_spec(),
            resident_bytes=runner.resident_bytes(),
            device_uuids=runner.device_uuids(),
            memory=runner.device_memory(),
        )
    except BaseException as error:  # report any start-up failure to the parent
        conn.send(("failed", f"{type(error).__name__}: {error}"))
        conn.close()
        return
    gc.collect()
    gc.freeze()  # long-lived model objects out of the collector: no full-collection pauses
    conn.send(("started", started))
    _serve_batches(conn, runner, depth=batches_in_flight)


def _serve_batches(conn: Connection, runner: Any, *, depth: int) -> None:
    """Launch each batch as it arrives; read one back when `depth` are in flight or none waits."""
    launched: deque[tuple[int, Any]] = deque()
    while True:
        if launched and (len(launched) >= depth or not conn.poll(_POLL_SECONDS)):
            number, handle = launched.popleft()
            _finish(conn, runner, number, handle)
            continue
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "stop":
            while launched:
                _finish(conn, runner, *launched.popleft())
            return
        number = message[1]
        if kind in _STEPS:
            while launched:
                _finish(conn, runner, *launched.popleft())
            _step(conn, runner, kind, number, message[2])
            continue
        batch = functools.partial(runner.start_batch, unpack(message[2]))
        handle = _attempt(conn, number, batch, "start")
        if handle is not _FAILED:
            launched.append((number, handle))


_STEPS: dict[str, Callable[[Any, int], Any]] = {
    "warm_up": lambda runner, tokens: runner.warm_up(max_batch_tokens=tokens),
    "measure": lambda runner, tokens: runner.activation_bytes_per_token(tokens=tokens),
    "free": lambda runner, _: runner.free_device_bytes(),
}


def _step(conn: Connection, runner: Any, kind: str, number: int, value: int) -> None:
    """A start-up step the parent asked for, answered as a batch is (done, oom or failed)."""
    result = _attempt(conn, number, lambda: _STEPS[kind](runner, value), kind)
    if result is not _FAILED:
        conn.send(("done", number, result, runner.device_memory()))


def _finish(conn: Connection, runner: Any, number: int, handle: Any) -> None:
    values = _attempt(conn, number, lambda: runner.finish_batch(handle), "finish")
    if values is not _FAILED:
        conn.send(("done", number, values, runner.device_memory()))


_FAILED = object()


def _attempt(conn: Connection, number: int, work: Callable[[], Any], what: str) -> Any:
    """`work`'s result, or _FAILED once the parent was told why (oom, or failed)."""
    try:
        return work()
    except DeviceOutOfMemoryError as oom:
        conn.send(("oom", number, oom.detail))
    except Exception as error:
        log.exception("request %d (%s) failed", number, what)
        conn.send(("failed", number, f"{type(error).__name__}: {error}"))
    return _FAILED
