"""Synthetic batches (warm-up, memory probing) and the start-up self-check that the padding-free
forward agrees with the Hugging Face one before it serves."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from kuberank_inference.torchmodel.tokenizing import Encoded

log = logging.getLogger("kuberank_inference.torchmodel.runner")

Forward = Callable[[Sequence[Encoded]], Tensor]


def synthetic_batch(
    *, vocab: int, count: int, length: int, seed: int = 0, with_types: bool
) -> list[Encoded]:
    """`count` random sequences of about `length` tokens (lengths vary, as real batches do)."""
    generator = np.random.default_rng(seed)
    low = min(1000, vocab // 2)
    seqs = []
    for row in range(count):
        size = max(2, length - (row % 7) * (length // 8))
        ids = generator.integers(low, vocab, size=size, dtype=np.int32)
        types = np.zeros(size, dtype=np.int32)
        types[size // 2 :] = 1
        seqs.append(Encoded(ids, types if with_types else None))
    return seqs


def agrees_with_reference(
    batch: Sequence[Encoded], *, packed: Forward, reference: Forward, tolerance: float
) -> bool:
    """True when the packed forward matches the reference within `tolerance` (relative)."""
    try:
        with torch.inference_mode():
            out = packed(batch).float()
            # a second shape, so that a compiled kernel proves it handles dynamic sizes
            packed(batch[:3])
            expected = reference(batch).float()
    except torch.OutOfMemoryError:
        # Not a wrong kernel: the device is full. The caller says how much memory was missing.
        raise
    except Exception:
        log.exception("the padding-free forward failed its self-check")
        return False
    error = float((out - expected).norm() / expected.norm().clamp_min(1e-6))
    if error <= tolerance and bool(torch.isfinite(out).all()):
        log.info("padding-free forward agrees with the reference (relative error %.2e)", error)
        return True
    log.error(
        "padding-free forward disagrees with the Hugging Face forward (relative error "
        "%.2e > %.0e); falling back to padded batches",
        error,
        tolerance,
    )
    return False
