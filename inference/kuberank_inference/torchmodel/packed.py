"""Padding-free forward of BERT-family encoders (BERT, RoBERTa, XLM-R): the sequences of a batch
are concatenated into one [tokens, hidden] matrix, so every matrix product runs on real tokens
only, and attention runs per sequence through variable-length flash attention on CUDA.

It reuses the loaded Hugging Face weights (query, key and value fused into one product); a
start-up self-check compares it with the Hugging Face forward before it is trusted.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from torch import Tensor, nn
from transformers import PreTrainedModel

PACKABLE_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})

AttentionFn = Callable[[Tensor, Tensor, Tensor, "PackedLayout"], Tensor]


@dataclass(frozen=True, slots=True)
class PackedLayout:
    """Where each sequence sits in the packed token matrix (all tensors on the device)."""

    cu_seqlens: Tensor  # [n + 1] int32, start offsets and the total
    max_len: int
    num_seqs: int
    # for attention without varlen kernels: token -> row * max_len + position, and the key mask
    scatter_index: Tensor | None = None
    key_mask: Tensor | None = None


def packing_obstacle(model: PreTrainedModel) -> str | None:
    """Why this model cannot run packed, or None when it can."""
    config = model.config
    if config.model_type not in PACKABLE_MODEL_TYPES:
        return f"model type {config.model_type!r} is not one of {sorted(PACKABLE_MODEL_TYPES)}"
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return f"position_embedding_type {config.position_embedding_type!r} is not absolute"
    if getattr(config, "is_decoder", False):
        return "decoder models are not supported"
    base: Any = model.base_model
    try:
        layer = base.encoder.layer[0]
        _ = (layer.attention.self.query, layer.attention.output.dense, layer.intermediate.dense)
        _ = (base.embeddings.word_embeddings, base.embeddings.position_embeddings)
    except AttributeError as error:
        return f"unexpected module layout: {error}"
    return None


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_weight: Tensor
    qkv_bias: Tensor | None
    out_weight: Tensor
    out_bias: Tensor | None
    norm1: nn.LayerNorm
    up_weight: Tensor
    up_bias: Tensor | None
    activation: Callable[[Tensor], Tensor]
    down_weight: Tensor
    down_bias: Tensor | None
    norm2: nn.LayerNorm


def _fused(*linears: nn.Linear) -> tuple[Tensor, Tensor | None]:
    weight = torch.cat([linear.weight for linear in linears], dim=0).contiguous()
    biases = [linear.bias for linear in linears]
    if any(bias is None for bias in biases):
        return weight, None
    return weight, torch.cat([b for b in biases if b is not None], dim=0).contiguous()


def _norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _add_norm(x: Tensor, residual: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    return F.layer_norm(x + residual, (x.shape[-1],), weight, bias, eps)


AddNorm = Callable[[Tensor, Tensor, Tensor, Tensor, float], Tensor]


_GELU_ACTIVATIONS = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"})


class PackedEncoder:
    def __init__(
        self, model: PreTrainedModel, *, fused_gelu: bool = False, fused_norm: bool = False
    ) -> None:
        base: Any = model.base_model
        embeddings = base.embeddings
        config = model.config
        self.hidden_size = int(config.hidden_size)
        self.num_heads = int(config.num_attention_heads)
        self.head_dim = self.hidden_size // self.num_heads
        self.word = embeddings.word_embeddings.weight
        self.position = embeddings.position_embeddings.weight
        token_types = getattr(embeddings, "token_type_embeddings", None)
        self.token_type = token_types.weight if token_types is not None else None
        self.embedding_norm: nn.LayerNorm = embeddings.LayerNorm
        padding_idx = embeddings.position_embeddings.padding_idx
        # RoBERTa-style models count positions from padding_idx + 1
        self.position_offset = 0 if padding_idx is None else int(padding_idx) + 1
        # cuBLASLt applies a tanh-approximated GELU in the up-projection's epilogue: one pass
        # over the [tokens, 4 * hidden] activations fewer per layer
        self.fused_gelu = fused_gelu and str(config.hidden_act) in _GELU_ACTIVATIONS
        # residual add and LayerNorm in one generated kernel: two passes over [tokens, hidden]
        # fewer per layer (compiled on first use; the runner falls back to eager if it fails)
        self.fused_norm = fused_norm
        self._add_norm: AddNorm = _add_norm
        if fused_norm:
            self._add_norm = torch.compile(_add_norm, dynamic=True, fullgraph=True)
        self.layers: list[_Layer] = []
        for layer in base.encoder.layer:
            attention = layer.attention
            qkv_weight, qkv_bias = _fused(
                attention.self.query, attention.self.key, attention.self.value
            )
            self.layers.append(
                _Layer(
                    qkv_weight=qkv_weight,
                    qkv_bias=qkv_bias,
                    out_weight=attention.output.dense.weight,
                    out_bias=attention.output.dense.bias,
                    norm1=attention.output.LayerNorm,
                    up_weight=layer.intermediate.dense.weight,
                    up_bias=layer.intermediate.dense.bias,
                    activation=layer.intermediate.intermediate_act_fn,
                    down_weight=layer.output.dense.weight,
                    down_bias=layer.output.dense.bias,
                    norm2=layer.output.LayerNorm,
                )
            )

    @property
    def uses_token_types(self) -> bool:
        return self.token_type is not None and self.token_type.shape[0] > 1

    def hidden_states(
        self,
        input_ids: Tensor,
        positions: Tensor,
        token_types: Tensor | None,
        layout: PackedLayout,
        attention: AttentionFn,
    ) -> Tensor:
        """[tokens] ids and positions (offset included) -> [tokens, hidden] last hidden states."""
        x = F.embedding(input_ids, self.word) + F.embedding(positions, self.position)
        if self.token_type is not None:
            if token_types is None:
                x = x + self.token_type[0]
            else:
                x = x + F.embedding(token_types, self.token_type)
        x = _norm(x, self.embedding_norm)
        tokens = x.shape[0]
        for layer in self.layers:
            qkv = F.linear(x, layer.qkv_weight, layer.qkv_bias)
            q, k, v = qkv.view(tokens, 3, self.num_heads, self.head_dim).unbind(1)
            context = attention(q, k, v, layout).reshape(tokens, self.hidden_size)
            x = self._residual_norm(
                F.linear(context, layer.out_weight, layer.out_bias), x, layer.norm1
            )
            if self.fused_gelu and layer.up_bias is not None:
                h = torch._addmm_activation(layer.up_bias, x, layer.up_weight.t(), use_gelu=True)
            else:
                h = layer.activation(F.linear(x, layer.up_weight, layer.up_bias))
            x = self._residual_norm(F.linear(h, layer.down_weight, layer.down_bias), x, layer.norm2)
        return x

    def _residual_norm(self, x: Tensor, residual: Tensor, norm: nn.LayerNorm) -> Tensor:
        bias: Tensor | None = norm.bias
        if bias is None:
            return _norm(x + residual, norm)
        return self._add_norm(x, residual, norm.weight, bias, norm.eps)


def padded_attention(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
    """Attention for packed tokens through padded SDPA (CPU, or CUDA without varlen kernels)."""
    assert layout.scatter_index is not None
    assert layout.key_mask is not None
    rows, width = layout.num_seqs, layout.max_len
    heads, dim = q.shape[1], q.shape[2]

    def pad(x: Tensor) -> Tensor:
        out = x.new_zeros(rows * width, heads, dim)
        out[layout.scatter_index] = x
        return out.view(rows, width, heads, dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=layout.key_mask)
    return out.transpose(1, 2).reshape(rows * width, heads, dim)[layout.scatter_index]


def varlen_attention() -> tuple[str, AttentionFn] | None:
    """Variable-length flash attention from torch, if this build has it."""
    varlen_attn: Callable[..., Any] | None
    try:
        varlen_attn = importlib.import_module("torch.nn.attention.varlen").varlen_attn
    except (ImportError, AttributeError):
        varlen_attn = None
    if varlen_attn is not None:

        def through_varlen(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
            out = varlen_attn(
                q, k, v, layout.cu_seqlens, layout.cu_seqlens, layout.max_len, layout.max_len
            )
            assert isinstance(out, Tensor)
            return out

        return "torch.nn.attention.varlen", through_varlen
    flash = getattr(torch.ops.aten, "_flash_attention_forward", None)
    if flash is None:
        return None

    def through_flash(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
        result = flash(
            q,
            k,
            v,
            layout.cu_seqlens,
            layout.cu_seqlens,
            layout.max_len,
            layout.max_len,
            0.0,
            False,
            False,
        )
        out = result[0]
        assert isinstance(out, Tensor)
        return out

    return "aten._flash_attention_forward", through_flash
