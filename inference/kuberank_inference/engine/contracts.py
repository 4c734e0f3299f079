"""What the engine asks of a model: the `ModelRunner` protocol and the plain data it trades.

The engine never sees a tensor: sequences are opaque objects that only say how many tokens they
hold, and outputs are floats (a raw score) or lists of floats (an embedding).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal, Protocol

from kuberank_inference.quality import PrecisionReport

Task = Literal["rerank", "embed"]
Direction = Literal["right", "left"]
ScoreActivation = Literal["sigmoid", "identity"]
Output = float | list[float]


class TokenizedSequence(Protocol):
    """One tokenized query–document pair or text, ready for a batch."""

    @property
    def num_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PairsInput:
    """A query scored against each text by a cross-encoder."""

    query: str
    texts: Sequence[str]
    truncate: bool
    direction: Direction = "right"
    max_text_tokens: int | None = None

    @property
    def size(self) -> int:
        return len(self.texts)


@dataclass(frozen=True, slots=True)
class TextsInput:
    """Texts embedded one by one (also a query and documents scored by cosine similarity)."""

    texts: Sequence[str]
    truncate: bool
    direction: Direction = "right"
    max_text_tokens: int | None = None

    @property
    def size(self) -> int:
        return len(self.texts)


ModelInput = PairsInput | TextsInput


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What /info shows and what the engine plans with."""

    model_id: str
    source: str
    task: Task
    architecture: str
    device: str
    dtype: str
    max_input_length: int
    padding_free: bool
    attention: str
    embedding_dimension: int | None
    score_activation: ScoreActivation
    normalizes_embeddings: bool
    device_name: str = "cpu"  # the accelerator's product name ("NVIDIA H200"), cpu on CPU
    # dtype fp8: asked for, served or refused and why (None: the dtype was not fp8)
    precision: PrecisionReport | None = None


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    """Accelerator memory as the model's framework sees it, in bytes."""

    total: int
    allocated: int
    reserved: int
    peak_allocated: int


class Abandoned(Protocol):
    """Set when the client of a request has left (a threading.Event): work for it may stop."""

    def is_set(self) -> bool: ...


class TokenizationTicket(Protocol):
    """One request handed to the tokenizers: its future, and a way to say its client left (work
    not yet started never starts; work under way stops between chunks)."""

    @property
    def future(self) -> Future[list[TokenizedSequence]]: ...

    def abandon(self) -> None: ...


class Tokenizers(Protocol):
    """Where requests are tokenized, off the event loop: the server's own threads, or processes
    of their own (whose Python never holds the server's GIL)."""

    def submit(self, request: ModelInput) -> TokenizationTicket: ...

    def shutdown(self) -> None: ...


class BatchHandle(Protocol):
    """A batch launched on the device whose outputs are not yet read back."""


class ModelRunner(Protocol):
    """The model adapter: tokenizes, runs batches, and reads results back.

    `encode` runs on tokenizer threads (unless the server tokenizes in processes of its own);
    `start_batch` and `finish_batch` run on the single batch worker thread, so a runner may
    launch batch k+1 before batch k is read back.
    """

    @property
    def info(self) -> ModelInfo: ...

    def encode(
        self, request: ModelInput, *, abandoned: Abandoned | None = None
    ) -> list[TokenizedSequence]:
        """Tokenize; InputTooLongError when a sequence is too long and truncation is off;
        RequestAbandonedError (between chunks) once `abandoned` is set."""
        ...

    def start_batch(self, sequences: Sequence[TokenizedSequence]) -> BatchHandle:
        """Collate, copy to the device and launch; raises DeviceOutOfMemoryError."""
        ...

    def finish_batch(self, handle: BatchHandle) -> list[Output]:
        """Wait for a launched batch and return one output per sequence, in order."""
        ...

    def device_memory(self) -> DeviceMemory | None:
        """Accelerator memory, or None on CPU."""
        ...
