"""Tokenization with the model's fast (Rust) tokenizer, the same ids the model's own tokenizer call
would give (`longest_first` truncation for pairs), but without padding and with length checks.

Runs on the engine's tokenizer threads: the Rust tokenizer releases the GIL while it encodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from kuberank_inference.engine.contracts import Direction, ModelInput, PairsInput
from kuberank_inference.failures import InputTooLongError

IntArray = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenized sequence; `type_ids` is None when the model has a single token type."""

    ids: IntArray
    type_ids: IntArray | None

    @property
    def num_tokens(self) -> int:
        return int(self.ids.shape[0])


class SequenceTokenizer:
    def __init__(self, backend: Tokenizer, *, max_length: int, uses_type_ids: bool) -> None:
        serialized = backend.to_str()
        self._max_length = max_length
        self._uses_type_ids = uses_type_ids
        self._plain = _fresh(serialized)
        self._truncating: dict[Direction, Tokenizer] = {}
        for direction in ("right", "left"):
            tokenizer = _fresh(serialized)
            tokenizer.enable_truncation(max_length, strategy="longest_first", direction=direction)
            self._truncating[direction] = tokenizer

    @property
    def max_length(self) -> int:
        return self._max_length

    def encode(self, request: ModelInput) -> list[Encoded]:
        texts: Sequence[str] = request.texts
        if request.max_text_tokens is not None and request.max_text_tokens < self._max_length:
            texts = self._cut(texts, request.max_text_tokens)
        inputs: list[str | tuple[str, str]]
        if isinstance(request, PairsInput):
            inputs = [(request.query, text) for text in texts]
        else:
            inputs = list(texts)
        encodings = self._plain.encode_batch_fast(inputs)
        too_long = [i for i, enc in enumerate(encodings) if len(enc.ids) > self._max_length]
        if too_long:
            if not request.truncate:
                first = too_long[0]
                raise InputTooLongError(
                    index=first,
                    where=f"texts[{first}]",
                    tokens=len(encodings[first].ids),
                    limit=self._max_length,
                    with_query=isinstance(request, PairsInput),
                )
            redone = self._truncating[request.direction].encode_batch_fast(
                [inputs[i] for i in too_long]
            )
            for index, encoding in zip(too_long, redone, strict=True):
                encodings[index] = encoding
        return [
            Encoded(
                np.asarray(enc.ids, dtype=np.int32),
                np.asarray(enc.type_ids, dtype=np.int32) if self._uses_type_ids else None,
            )
            for enc in encodings
        ]

    def _cut(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """Cut each text after its first `max_tokens` tokens (Cohere's max_tokens_per_doc)."""
        encodings = self._plain.encode_batch(list(texts), add_special_tokens=False)
        cut: list[str] = []
        for text, encoding in zip(texts, encodings, strict=True):
            if len(encoding.ids) > max_tokens:
                text = text[: encoding.offsets[max_tokens - 1][1]]
            cut.append(text)
        return cut


def _fresh(serialized: str) -> Tokenizer:
    tokenizer = Tokenizer.from_str(serialized)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
