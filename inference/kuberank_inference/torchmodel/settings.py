"""How to load and run a model (picklable: it travels to the model process). No torch here.

Every field is filled from the server's settings (kuberank_inference.config), where each default
lives; the FP8 gate's thresholds alone default here (to the same values), so that callers that
never ask for fp8 need not name them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kuberank_inference.quality import DEFAULT_MIN_SPEARMAN, DEFAULT_MIN_TOP_K_OVERLAP
from kuberank_inference.sources import ModelSource


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    source: ModelSource
    task: Literal["auto", "rerank", "embed"]
    device: str
    dtype: str
    attention: Literal["auto", "packed", "padded"]
    max_input_length: int
    model_id: str | None
    vram_safety_margin: float
    fused_gelu: bool
    fused_norm: bool
    fp8_min_spearman: float = DEFAULT_MIN_SPEARMAN
    fp8_min_top_k_overlap: float = DEFAULT_MIN_TOP_K_OVERLAP
