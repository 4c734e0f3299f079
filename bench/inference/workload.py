"""Synthetic rerank requests with controlled token counts: every word is a whole-word entry of the
BERT vocabulary, so a document of n words is n tokens (checked against the tokenizer)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

MIN_PAIR_TOKENS = 64
MAX_PAIR_TOKENS = 512
QUERY_WORDS = 9
SPECIAL_TOKENS = 3  # [CLS] query [SEP] document [SEP]


@dataclass(frozen=True, slots=True)
class RerankRequest:
    query: str
    documents: list[str]
    pair_tokens: list[int]

    def body(self) -> bytes:
        return json.dumps({"query": self.query, "texts": self.documents}).encode()


def vocabulary_words(tokenizer_dir: Path) -> list[str]:
    words = []
    for line in (tokenizer_dir / "vocab.txt").read_text(encoding="utf-8").splitlines():
        if line.isascii() and line.isalpha() and line.islower() and len(line) >= 3:
            words.append(line)
    return words


def pair_length(rng: random.Random, *, mean_tokens: int) -> int:
    """Pair tokens in [64, 512]: a Beta(2.2, b) spread whose mean is `mean_tokens`."""
    fraction = (mean_tokens - MIN_PAIR_TOKENS) / (MAX_PAIR_TOKENS - MIN_PAIR_TOKENS)
    alpha = 2.2
    beta = alpha * (1.0 - fraction) / fraction
    span = MAX_PAIR_TOKENS - MIN_PAIR_TOKENS
    return MIN_PAIR_TOKENS + round(span * rng.betavariate(alpha, beta))


def make_requests(
    words: list[str], *, count: int, documents: int, mean_tokens: int, seed: int
) -> list[RerankRequest]:
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        query_words = [rng.choice(words) for _ in range(QUERY_WORDS)]
        docs, lengths = [], []
        for _ in range(documents):
            total = pair_length(rng, mean_tokens=mean_tokens)
            doc_words = total - QUERY_WORDS - SPECIAL_TOKENS
            docs.append(" ".join(rng.choice(words) for _ in range(doc_words)))
            lengths.append(total)
        requests.append(RerankRequest(" ".join(query_words), docs, lengths))
    return requests
