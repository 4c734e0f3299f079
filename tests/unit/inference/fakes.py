"""A fake ModelRunner for engine tests: deterministic outputs, recorded batches, events a test can
wait on (a batch started, the worker reading one back), and switches to block batches, fail them,
or run out of memory above a token count."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from kuberank_inference.engine.contracts import (
    Abandoned,
    BatchHandle,
    DeviceMemory,
    ModelInfo,
    ModelInput,
    Output,
    PairsInput,
    TokenizedSequence,
)
from kuberank_inference.failures import (
    DeviceOutOfMemoryError,
    InputTooLongError,
    RequestAbandonedError,
)


@dataclass(frozen=True, slots=True)
class FakeSequence:
    text: str
    num_tokens: int


def fake_score(text: str) -> float:
    """A deterministic 'model': the score of a text depends on the text alone."""
    return float(sum(map(ord, text)) % 997) / 997.0


def fake_info(*, padding_free: bool = True, max_input_length: int = 64) -> ModelInfo:
    return ModelInfo(
        model_id="fake",
        source="memory",
        task="rerank",
        architecture="Fake",
        device="cpu",
        dtype="float32",
        max_input_length=max_input_length,
        padding_free=padding_free,
        attention="fake",
        embedding_dimension=None,
        score_activation="identity",
        normalizes_embeddings=False,
    )


@dataclass
class FakeRunner:
    info: ModelInfo = field(default_factory=fake_info)
    oom_above_tokens: int | None = None
    fail_with: Exception | None = None
    gate: threading.Event = field(default_factory=threading.Event)
    batches: list[list[str]] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    reading_back: threading.Event = field(default_factory=threading.Event)
    # a slow tokenizer: encode waits for this gate (None: no wait), giving up once abandoned
    encode_gate: threading.Event | None = None
    encoding: threading.Event = field(default_factory=threading.Event)
    abandoned_seen: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def encode(
        self, request: ModelInput, *, abandoned: Abandoned | None = None
    ) -> list[TokenizedSequence]:
        if self.encode_gate is not None:
            self.encoding.set()
            while not self.encode_gate.wait(timeout=0.01):
                if abandoned is not None and abandoned.is_set():
                    self.abandoned_seen.set()
                    raise RequestAbandonedError("the client left")
        limit = self.info.max_input_length
        sequences: list[TokenizedSequence] = []
        for index, text in enumerate(request.texts):
            tokens = len(text.split()) + 2
            if tokens > limit:
                if not request.truncate:
                    raise InputTooLongError(
                        index=index,
                        where=f"texts[{index}]",
                        tokens=tokens,
                        limit=limit,
                        with_query=isinstance(request, PairsInput),
                    )
                tokens = limit
            sequences.append(FakeSequence(text, tokens))
        return sequences

    def start_batch(self, sequences: Sequence[TokenizedSequence]) -> BatchHandle:
        fakes = [s for s in sequences if isinstance(s, FakeSequence)]
        tokens = sum(s.num_tokens for s in fakes)
        self.started.set()
        if self.oom_above_tokens is not None and tokens > self.oom_above_tokens:
            raise DeviceOutOfMemoryError(tokens=tokens, detail="fake device is full")
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append([s.text for s in fakes])
        return fakes

    def finish_batch(self, handle: BatchHandle) -> list[Output]:
        self.reading_back.set()
        self.gate.wait(timeout=30)
        assert isinstance(handle, list)
        return [fake_score(s.text) for s in handle]

    def device_memory(self) -> DeviceMemory | None:
        return None


@dataclass
class ServableFakeRunner(FakeRunner):
    """The fake with the start-up facts the HTTP app asks for."""

    def warm_up(self, *, max_batch_tokens: int) -> None:
        pass

    def activation_bytes_per_token(self, *, tokens: int) -> float:
        return 0.0

    def resident_bytes(self) -> int:
        return 0

    def free_device_bytes(self) -> int | None:
        return None

    def device_uuids(self) -> list[str]:
        return []

    def close(self) -> None:
        self.gate.set()
