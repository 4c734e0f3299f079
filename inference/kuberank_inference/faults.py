"""Fault injection, behind one seam: `OomInjection` wraps a model and implements the same
protocol, so the engine's real out-of-memory handling runs while no layer below knows of it.

The server wraps its model only under --debug-fault-injection (tests); tests wrap fakes, runners
and model processes the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from kuberank_inference.app import ServableModel

INJECTED = "CUDA out of memory (injected through /debug/inject-oom; --debug-fault-injection)"


class OomInjection:
    """A ServableModel whose next N batches fail to start as a device out of memory would."""

    def __init__(self, model: ServableModel) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._pending = 0

    def inject_oom(self, count: int) -> None:
        with self._lock:
            self._pending += count

    def _take(self) -> bool:
        with self._lock:
            if self._pending <= 0:
                return False
            self._pending -= 1
            return True

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    def encode(
        self, request: ModelInput, *, abandoned: Abandoned | None = None
    ) -> list[TokenizedSequence]:
        return self._model.encode(request, abandoned=abandoned)

    def start_batch(self, sequences: Sequence[TokenizedSequence]) -> BatchHandle:
        if self._take():
            raise DeviceOutOfMemoryError(
                tokens=sum(seq.num_tokens for seq in sequences), detail=INJECTED
            )
        return self._model.start_batch(sequences)

    def finish_batch(self, handle: BatchHandle) -> list[Output]:
        return self._model.finish_batch(handle)

    def device_memory(self) -> DeviceMemory | None:
        return self._model.device_memory()

    def warm_up(self, *, max_batch_tokens: int) -> None:
        self._model.warm_up(max_batch_tokens=max_batch_tokens)

    def activation_bytes_per_token(self, *, tokens: int) -> float:
        return self._model.activation_bytes_per_token(tokens=tokens)

    def resident_bytes(self) -> int:
        return self._model.resident_bytes()

    def free_device_bytes(self) -> int | None:
        return self._model.free_device_bytes()

    def device_uuids(self) -> list[str]:
        return self._model.device_uuids()

    def close(self) -> None:
        self._model.close()
