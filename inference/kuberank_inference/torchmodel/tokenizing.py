"""Tokenization with the model's fast (Rust) tokenizer, the same ids the model's own tokenizer call
would give (`longest_first` truncation for pairs), but without padding and with length checks.

Runs on the engine's tokenizer threads: the Rust tokenizer releases the GIL while it encodes.
What a refused request costs is bounded: a long text is measured on a prefix window of its
characters, never whole; the query is measured and cut once, before it is paired with each
document; texts are tokenized in chunks, and a request whose client left stops between chunks.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from kuberank_inference.engine.contracts import Abandoned, Direction, ModelInput, PairsInput
from kuberank_inference.failures import InputTooLongError, RequestAbandonedError

IntArray = npt.NDArray[np.int32]
CHUNK = 64  # sequences per tokenizer call: between calls a request whose client left stops
_CHARS_PER_TOKEN = 8  # first window: 8 characters per allowed token, doubled while too few


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenized sequence; `type_ids` is None when the model has a single token type."""

    ids: IntArray
    type_ids: IntArray | None

    @property
    def num_tokens(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True, slots=True)
class _Clip:
    """A text measured on a prefix window: `text` holds at most `limit` tokens of the original
    (cut where the tokens end) when `over` says it had more; else it is the text unchanged."""

    text: str
    over: bool
    counted: int


@dataclass(frozen=True, slots=True)
class TokenizerSpec:
    """What another process needs to tokenize exactly as the model's runner does."""

    tokenizer_json: str
    max_length: int
    uses_type_ids: bool

    def build(self) -> SequenceTokenizer:
        return SequenceTokenizer(
            Tokenizer.from_str(self.tokenizer_json),
            max_length=self.max_length,
            uses_type_ids=self.uses_type_ids,
        )


class SequenceTokenizer:
    def __init__(self, backend: Tokenizer, *, max_length: int, uses_type_ids: bool) -> None:
        serialized = backend.to_str()
        self._max_length = max_length
        self._uses_type_ids = uses_type_ids
        self._plain = _fresh(serialized)
        self._pair_specials = self._plain.num_special_tokens_to_add(True)
        self._single_specials = self._plain.num_special_tokens_to_add(False)
        self._truncating: dict[Direction, Tokenizer] = {}
        for direction in ("right", "left"):
            tokenizer = _fresh(serialized)
            tokenizer.enable_truncation(max_length, strategy="longest_first", direction=direction)
            self._truncating[direction] = tokenizer

    @property
    def max_length(self) -> int:
        return self._max_length

    def encode(self, request: ModelInput, *, abandoned: Abandoned | None = None) -> list[Encoded]:
        request, query_over = self._clip_request(request)
        texts: Sequence[str] = request.texts
        if request.max_text_tokens is not None and request.max_text_tokens < self._max_length:
            texts = self._cut(texts, request.max_text_tokens)
        joiner = self._truncating[request.direction] if request.truncate else self._plain
        pairs: _Pairs | None = None
        if isinstance(request, PairsInput) and query_over:
            # a query cut to the limit: tokenized once, then joined to each document as a pair
            # encoding of the whole query would join them (longer than any document)
            query = self._plain.encode(request.query, add_special_tokens=False)
            pairs = _Pairs(query, query_over, self._max_length - self._pair_specials)
        encodings: list[Encoding] = []
        for start in range(0, len(texts), CHUNK):
            if abandoned is not None and abandoned.is_set():
                raise RequestAbandonedError("the client left while its request was tokenized")
            part = list(texts[start : start + CHUNK])
            if pairs is not None:
                pieces = self._plain.encode_batch_fast(part, add_special_tokens=False)
                chunk = [pairs.join(self._plain, piece, request.direction) for piece in pieces]
            elif isinstance(request, PairsInput):
                # special tokens, type ids and longest_first truncation inside one call that
                # releases the GIL and runs on the tokenizer's own threads: no Python per pair
                chunk = joiner.encode_batch_fast([(request.query, text) for text in part])
            else:
                chunk = joiner.encode_batch_fast(part)
            if not request.truncate:
                self._refuse_too_long(chunk, start, request)
            encodings.extend(chunk)
        return as_arrays(encodings, with_types=self._uses_type_ids)

    def _refuse_too_long(self, chunk: list[Encoding], start: int, request: ModelInput) -> None:
        for offset, encoding in enumerate(chunk):
            if len(encoding) > self._max_length:  # len(): no list of ids built to count them
                index = start + offset
                raise InputTooLongError(
                    index=index,
                    where=f"texts[{index}]",
                    tokens=len(encoding),
                    limit=self._max_length,
                    with_query=isinstance(request, PairsInput),
                )

    def _clip_request(self, request: ModelInput) -> tuple[ModelInput, bool]:
        """Measure long texts (and the query, once) on prefix windows: refuse those over the
        limit before anything else is tokenized, or cut them to what truncation could keep."""
        pair = isinstance(request, PairsInput)
        query_over = False
        if isinstance(request, PairsInput):
            room = self._max_length - self._pair_specials  # with an empty document
            clip = self._clip(request.query, room, request.direction)
            if clip.over and not request.truncate:
                raise InputTooLongError(
                    index=-1,
                    where="query",
                    tokens=clip.counted + self._pair_specials,
                    limit=self._max_length,
                    with_query=True,
                    at_least=True,
                )
            if clip.over:
                # longest_first keeps at most the limit of either text: cut the query once
                query_over = True
                cut = self._clip(request.query, self._max_length, request.direction)
                request = replace(request, query=cut.text)
        room = self._max_length - (self._pair_specials if pair else self._single_specials)
        texts: list[str] | None = None
        for index, text in enumerate(request.texts):
            clip = self._clip(text, room, request.direction)
            if not clip.over:
                continue
            if not request.truncate:
                raise InputTooLongError(
                    index=index,
                    where=f"texts[{index}]",
                    tokens=clip.counted + (self._pair_specials if pair else self._single_specials),
                    limit=self._max_length,
                    with_query=pair,
                    at_least=True,
                )
            if texts is None:
                texts = list(request.texts)
            texts[index] = self._clip(text, self._max_length, request.direction).text
        return (request if texts is None else replace(request, texts=texts)), query_over

    def _clip(self, text: str, limit: int, direction: Direction) -> _Clip:
        """Whether `text` holds more than `limit` tokens (no special tokens), measured on a
        window of its characters cut at a space, so the cost is bounded by the limit."""
        window = max(256, _CHARS_PER_TOKEN * max(1, limit))
        while len(text) > window:
            part = _window(text, window, direction)
            encoding = self._plain.encode(part, add_special_tokens=False)
            count = len(encoding.ids)
            if count > limit:
                offsets = encoding.offsets
                if direction == "right":
                    return _Clip(part[: offsets[limit - 1][1]], over=True, counted=count)
                return _Clip(part[offsets[count - limit][0] :], over=True, counted=count)
            window *= 2
        return _Clip(text, over=False, counted=0)

    def _cut(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """Cut each text after its first `max_tokens` tokens (Cohere's max_tokens_per_doc)."""
        encodings = self._plain.encode_batch(list(texts), add_special_tokens=False)
        cut: list[str] = []
        for text, encoding in zip(texts, encodings, strict=True):
            if len(encoding.ids) > max_tokens:
                text = text[: encoding.offsets[max_tokens - 1][1]]
            cut.append(text)
        return cut


class _Pairs:
    """The query, tokenized once, joined to each document with the truncation a pair encoding
    gets (`longest_first`); truncated copies of the query are made once per length."""

    def __init__(self, query: Encoding, over: bool, target: int) -> None:
        self.query = query
        self._length = sys.maxsize if over else len(query.ids)  # cut: longer than any document
        self._target = target
        self._cut: dict[int, Encoding] = {}

    def join(self, joiner: Tokenizer, document: Encoding, direction: Direction) -> Encoding:
        query_tokens, document_tokens = longest_first(
            self._length, len(document.ids), target=self._target
        )
        if document_tokens < len(document.ids):
            document.truncate(document_tokens, direction=direction)
        query = self.query
        if query_tokens < len(query.ids):
            query = self._cut.get(query_tokens) or self._cut_query(query_tokens, direction)
        return joiner.post_process(query, document)

    def _cut_query(self, tokens: int, direction: Direction) -> Encoding:
        cut = Encoding.merge([self.query], growing_offsets=False)
        cut.truncate(tokens, direction=direction)
        self._cut[tokens] = cut
        return cut


@dataclass(frozen=True, slots=True)
class Packed:
    """Sequences as three flat arrays, the form they cross a process boundary in: all ids, each
    sequence's length, and all type ids (None when the model has a single token type)."""

    ids: IntArray
    lengths: IntArray
    type_ids: IntArray | None


def pack(sequences: Sequence[Encoded]) -> Packed:
    if not sequences:
        empty = np.zeros(0, dtype=np.int32)
        return Packed(empty, empty, None)
    ids = np.concatenate([seq.ids for seq in sequences])
    lengths = np.fromiter((seq.num_tokens for seq in sequences), dtype=np.int32)
    types = None
    if sequences[0].type_ids is not None:
        types = np.concatenate([seq.type_ids for seq in sequences if seq.type_ids is not None])
    return Packed(ids, lengths, types)


def unpack(packed: Packed) -> list[Encoded]:
    """The sequences again, as views into the packed arrays (no copy)."""
    if not len(packed.lengths):
        return []
    bounds = np.cumsum(packed.lengths)[:-1]
    id_parts = np.split(packed.ids, bounds)
    if packed.type_ids is None:
        return [Encoded(part, None) for part in id_parts]
    type_parts = np.split(packed.type_ids, bounds)
    return [Encoded(i, t) for i, t in zip(id_parts, type_parts, strict=True)]


def as_arrays(encodings: Sequence[Encoding], *, with_types: bool) -> list[Encoded]:
    """The encodings as int32 arrays: views into one array per request, converted from Python
    ints in one call; type ids of the usual shape (zeros, then ones: [CLS] a [SEP] b [SEP]) are
    built from each sequence's boundary instead of converting a second list per sequence."""
    if not encodings:
        return []
    ids: list[int] = []
    lengths: list[int] = []
    for encoding in encodings:
        ids += encoding.ids
        lengths.append(len(encoding))
    flat_ids = np.array(ids, dtype=np.int32)
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    if not with_types:
        return [Encoded(flat_ids[a:b], None) for a, b in zip(starts, ends, strict=True)]
    types = _type_ids(encodings, lengths)
    return [Encoded(flat_ids[a:b], types[a:b]) for a, b in zip(starts, ends, strict=True)]


def _type_ids(encodings: Sequence[Encoding], lengths: list[int]) -> IntArray:
    zeros: list[int] = []
    for encoding, length in zip(encodings, lengths, strict=True):
        types = encoding.type_ids
        first = types.count(0)
        # zeros then ones: the first 1 comes right after every 0, and the rest are all 1
        if first == length or (types.count(1) == length - first and types.index(1) == first):
            zeros.append(first)
        else:  # another shape of type ids: convert every list
            return np.concatenate(
                [np.asarray(e.type_ids, dtype=np.int32) for e in encodings]
            ).astype(np.int32, copy=False)
    counts = np.empty(2 * len(lengths), dtype=np.int64)
    counts[0::2] = zeros
    counts[1::2] = np.asarray(lengths, dtype=np.int64) - counts[0::2]
    pattern = np.tile(np.array([0, 1], dtype=np.int32), len(lengths))
    return np.repeat(pattern, counts)


def longest_first(first: int, second: int, *, target: int) -> tuple[int, int]:
    """The lengths the tokenizers library's `longest_first` truncation leaves a pair of
    sequences of `first` and `second` tokens in `target` tokens (its rule, ties included)."""
    if first + second <= target:
        return first, second
    short, long_ = sorted((first, second))
    long_ = short if short > target else max(short, target - short)
    if short + long_ > target:
        short = target // 2
        long_ = short + target % 2
    return (long_, short) if first > second else (short, long_)


def _window(text: str, size: int, direction: Direction) -> str:
    """The first (right truncation) or last (left) `size` characters, cut at a space so that no
    word is split (a split word could tokenize into more pieces than it has)."""
    if direction == "right":
        part = text[:size]
        space = part.rfind(" ")
        return part[:space] if space > size // 2 else part
    part = text[-size:]
    space = part.find(" ")
    return part[space + 1 :] if 0 <= space < size // 2 else part


def _fresh(serialized: str) -> Tokenizer:
    tokenizer = Tokenizer.from_str(serialized)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
