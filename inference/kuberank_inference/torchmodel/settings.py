"""How to load and run a model (picklable: it travels to the model process). No torch here.

Every field is filled from the server's settings (kuberank_inference.config), where each default
lives; this record has none of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
