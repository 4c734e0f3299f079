"""Loading a checkpoint: a CrossEncoder (rerank) or SentenceTransformer (embed) from local files,
put on the device, with what serving needs of it (length limit, score activation, pooling)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from kuberank_inference.engine.contracts import ScoreActivation, Task
from kuberank_inference.failures import DeviceOutOfMemoryError
from kuberank_inference.torchmodel.settings import RunnerSettings

_POOLING = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class UnsupportedModelError(Exception):
    pass


@contextlib.contextmanager
def out_of_memory_reported() -> Iterator[None]:
    """Loading (weights, self-check) out of device memory surfaces as DeviceOutOfMemoryError,
    whose detail is torch's first line: what it tried to allocate and how much was free."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        detail = str(error).splitlines()[0] if str(error) else "out of memory"
        raise DeviceOutOfMemoryError(tokens=0, detail=detail) from None


@dataclass(frozen=True, slots=True)
class Pooling:
    """How an embedding model pools token states, and whether it normalizes the result."""

    mode: str
    normalize: bool


def place(settings: RunnerSettings) -> tuple[torch.device, str, torch.dtype]:
    """The device to run on (on CUDA made current, the safety margin kept from the allocator)
    and the dtype, by name and as torch's."""
    device = torch.device(settings.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UnsupportedModelError("--device cuda but torch sees no CUDA device")
        if getattr(device, "index", None) is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        # the process never takes the safety margin, whatever the allocator wants
        torch.cuda.set_per_process_memory_fraction(1.0 - settings.vram_safety_margin, device)
    dtype_name = settings.dtype
    if dtype_name == "fp8":
        # weights load as auto would load them (bf16 on CUDA); the runner then quantizes the
        # encoder's linear layers (torchmodel.fp8) or, refusing FP8, serves them as loaded
        dtype_name = "auto"
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.type == "cuda" else "float32"
    return device, dtype_name, _DTYPES[dtype_name]


def load_checkpoint(
    settings: RunnerSettings, task: Task, *, device: torch.device, dtype: torch.dtype
) -> tuple[PreTrainedModel, Any, int, ScoreActivation, Pooling | None]:
    """The Hugging Face model on the device, its tokenizer, length limit, activation, pooling."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    path = str(settings.source.path)
    if task == "rerank":
        require_score_head(settings.source.path)
        from sentence_transformers import CrossEncoder

        cross = CrossEncoder(path, device=str(device), local_files_only=True)
        hf_model = cross.model
        if hf_model is None:
            raise UnsupportedModelError(f"{path}: the cross-encoder has no transformer model")
        if int(hf_model.config.num_labels) != 1:
            raise UnsupportedModelError(
                f"{path}: a reranker must output one score, this model has "
                f"num_labels={hf_model.config.num_labels}"
            )
        activation = activation_name(cross.activation_fn)
        tokenizer = cross.tokenizer
        model_max = transformer_module(cross).max_seq_length
        pooling = None
    else:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(path, device=str(device), local_files_only=True)
        transformer = transformer_module(st)
        hf_model = transformer.auto_model
        tokenizer = transformer.tokenizer
        model_max = transformer.max_seq_length
        pooling = pooling_of(st)
        activation = "identity"
    hf_model.eval()
    hf_model.to(device=device, dtype=dtype)
    limit = position_limit(hf_model)
    max_length = min(int(model_max or limit), limit)
    if settings.max_input_length:
        max_length = min(max_length, settings.max_input_length)
    return hf_model, tokenizer, max_length, activation, pooling


def require_score_head(path: Path) -> None:
    """A reranker's checkpoint must carry its trained score head: loaded as a cross-encoder, an
    embedding model (BertModel, ...) gets a randomly initialized one and ranks at random, each
    replica differently."""
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((path / "config.json").read_text())
        architectures = [str(a) for a in config.get("architectures") or []]
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            found = ", ".join(architectures) or "no architectures in its config.json"
            raise UnsupportedModelError(
                f"{path}: task rerank needs a cross-encoder checkpoint (a "
                f"...ForSequenceClassification score head); this one is {found}, whose score "
                "head would be random. Serve it as an embedding model (--task embed, "
                "spec.model.task: embed: its /rerank ranks by cosine similarity) or mount a "
                "cross-encoder"
            )


def transformer_module(model: nn.Module) -> Any:
    for module in model.modules():
        if hasattr(module, "auto_model") or type(module).__name__ == "Transformer":
            return module
    raise UnsupportedModelError("the model has no sentence-transformers Transformer module")


def pooling_of(st: nn.Module) -> Pooling:
    children = list(st.children())
    names = [type(child).__name__ for child in children]
    if len(children) < 2 or names[1] != "Pooling":
        raise UnsupportedModelError(f"an embedding model needs Transformer -> Pooling, got {names}")
    extra = [name for name in names[2:] if name != "Normalize"]
    if extra:
        raise UnsupportedModelError(f"modules after Pooling are not supported: {extra}")
    pooling = children[1]
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None:
        flags = {
            "cls": "pooling_mode_cls_token",
            "mean": "pooling_mode_mean_tokens",
            "max": "pooling_mode_max_tokens",
            "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
            "lasttoken": "pooling_mode_lasttoken",
        }
        chosen = [name for name, attr in flags.items() if getattr(pooling, attr, False)]
        mode = chosen[0] if len(chosen) == 1 else None
    if isinstance(mode, list | tuple):
        mode = mode[0] if len(mode) == 1 else None
    if mode not in _POOLING:
        raise UnsupportedModelError(f"pooling mode {mode!r} is not one of {_POOLING}")
    return Pooling(mode=str(mode), normalize="Normalize" in names[2:])


def pool(hidden: Tensor, mask: Tensor, pooling: Pooling) -> Tensor:
    weights = mask.to(hidden.dtype)[:, :, None]
    if pooling.mode == "cls":
        return hidden[:, 0]
    if pooling.mode == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    if pooling.mode == "lasttoken":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp_min(1e-9)
    if pooling.mode == "mean_sqrt_len_tokens":
        return summed / counts.sqrt()
    return summed / counts


def activation_name(activation: object) -> ScoreActivation:
    if activation is None or isinstance(activation, nn.Identity):
        return "identity"
    if isinstance(activation, nn.Sigmoid):
        return "sigmoid"
    raise UnsupportedModelError(
        f"score activation {type(activation).__name__} is not supported (Sigmoid or Identity)"
    )


def position_limit(model: PreTrainedModel) -> int:
    embeddings = model.base_model.embeddings
    table = getattr(embeddings, "position_embeddings", None)
    if table is None:
        return int(getattr(model.config, "max_position_embeddings", 512))
    padding_idx = table.padding_idx
    offset = 0 if padding_idx is None else int(padding_idx) + 1
    return int(table.weight.shape[0]) - offset
