"""FP8 (e4m3) forward of the padding-free encoder, for GPUs of compute capability 8.9 and newer.

Weights of the four linear layers of every encoder layer (fused QKV, attention output, FFN up and
down) are stored as float8_e4m3fn with one scale per output channel. Activations are quantized
per row (per token) at run time, and the matrix products run through `torch._scaled_mm` with
rowwise scales and bf16 output. The quantization lives inside the kernels that already write
those activations: the residual add + LayerNorm (whose output feeds QKV and the FFN up
projection) and the GELU (whose output feeds the down projection) are each one generated kernel
(torch.compile / inductor) that writes the bf16 result, the row's scale and the fp8 copy in one
pass. Only the attention output, written by the flash-attention kernel, is quantized by a kernel
of its own (one read of [tokens, hidden]).

Whether FP8 may serve is decided by the quality gate (kuberank_inference.quality) at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from torch import Tensor

from kuberank_inference.torchmodel.packed import (
    AttentionFn,
    PackedEncoder,
    PackedLayout,
    _Layer,
)

E4M3_MAX = 448.0
FP8_MIN_CAPABILITY = (8, 9)
_TINY = 1e-12  # a row of zeros gets this amax, so its scale is never 0


def fp8_obstacle(device: torch.device) -> str | None:
    """Why FP8 cannot run on `device` (naming it and its compute capability), or None."""
    if device.type != "cuda":
        return (
            f"dtype fp8 needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, "
            f"Blackwell); the device is {device}"
        )
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if (major, minor) < FP8_MIN_CAPABILITY:
        return (
            f"dtype fp8 needs compute capability 8.9 or newer (Ada, Hopper, Blackwell); "
            f"{device} is an {name} of compute capability {major}.{minor}"
        )
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return f"this torch build ({torch.__version__}) has no FP8 matrix product"
    return None


@dataclass(frozen=True, slots=True)
class Fp8Weight:
    """A linear layer's weight in e4m3 with one float32 scale per output channel."""

    weight: Tensor  # [out, in] float8_e4m3fn, row-major: .t() is the column-major operand
    scale: Tensor  # [1, out] float32
    bias: Tensor | None  # [out] bf16

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])


def quantize_weight(weight: Tensor, bias: Tensor | None) -> Fp8Weight:
    """Per-output-channel symmetric quantization: each row's largest magnitude maps to 448."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(_TINY) / E4M3_MAX
    q = (w / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).contiguous()
    b = None if bias is None else bias.detach().to(torch.bfloat16).contiguous()
    return Fp8Weight(weight=q, scale=scale.t().contiguous(), bias=b)


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row symmetric quantization of activations: (fp8 values, [rows, 1] float32 scales)."""
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True).clamp_min(_TINY) / E4M3_MAX
    q = (xf / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def dequantize_rows(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale


def _add_norm_quant(
    x: Tensor, bias: Tensor | None, residual: Tensor, weight: Tensor, norm_bias: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """LayerNorm(x + bias + residual) in bf16, and its rowwise fp8 copy with the row scales."""
    if bias is not None:
        x = x + bias
    y = F.layer_norm(x + residual, (x.shape[-1],), weight, norm_bias, eps)
    q, scale = quantize_rows(y)
    return y, q, scale


def _norm_quant(
    x: Tensor, weight: Tensor, norm_bias: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    y = F.layer_norm(x, (x.shape[-1],), weight, norm_bias, eps)
    q, scale = quantize_rows(y)
    return y, q, scale


def _gelu_quant(h: Tensor, bias: Tensor | None, approximate: str) -> tuple[Tensor, Tensor]:
    """GELU(h + bias) quantized per row: the [tokens, ffn] activation never lands in bf16."""
    if bias is not None:
        h = h + bias
    g = F.gelu(h.float(), approximate=approximate).to(h.dtype)
    return quantize_rows(g)


def _bias_add(x: Tensor, bias: Tensor | None) -> Tensor:
    return x if bias is None else x + bias


AddNormQuant = Callable[
    [Tensor, Tensor | None, Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor, Tensor]
]
NormQuant = Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor, Tensor]]
GeluQuant = Callable[[Tensor, Tensor | None, str], tuple[Tensor, Tensor]]
RowQuant = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True, slots=True)
class Fp8Kernels:
    """The activation producers with the quantization fused in: hand-written Triton kernels on
    CUDA (torchmodel.fp8_triton), else inductor-compiled torch, else eager torch (CPU, tests)."""

    add_norm_quant: AddNormQuant
    norm_quant: NormQuant
    gelu_quant: GeluQuant
    quant: RowQuant
    kind: str  # "triton", "inductor" or "eager"

    @classmethod
    def build(cls, device: torch.device, *, compile_kernels: bool) -> Fp8Kernels:
        if compile_kernels and device.type == "cuda":
            try:
                from kuberank_inference.torchmodel import fp8_triton
            except ImportError:
                pass
            else:
                return cls(
                    add_norm_quant=fp8_triton.add_norm_quant,
                    norm_quant=fp8_triton.norm_quant,
                    gelu_quant=fp8_triton.gelu_quant,
                    quant=fp8_triton.quant,
                    kind="triton",
                )
        if not compile_kernels:
            return cls(_add_norm_quant, _norm_quant, _gelu_quant, quantize_rows, kind="eager")

        def compiled(fn: Any) -> Any:
            return torch.compile(fn, dynamic=True, fullgraph=True)

        return cls(
            add_norm_quant=compiled(_add_norm_quant),
            norm_quant=compiled(_norm_quant),
            gelu_quant=compiled(_gelu_quant),
            quant=compiled(quantize_rows),
            kind="inductor",
        )


def scaled_mm(q: Tensor, scale: Tensor, weight: Fp8Weight, *, with_bias: bool) -> Tensor:
    """[rows, in] fp8 (rowwise scales) @ weight.T (per-channel scales) -> [rows, out] bf16."""
    return torch._scaled_mm(
        q,
        weight.weight.t(),
        scale_a=scale,
        scale_b=weight.scale,
        bias=weight.bias if with_bias else None,
        out_dtype=torch.bfloat16,
    )


def scaled_mm_takes_bias(device: torch.device) -> bool:
    """Whether this build's rowwise-scaled FP8 product accepts a bias (one tiny product)."""
    a = torch.ones(16, 16, device=device).to(torch.float8_e4m3fn)
    scale_a = torch.ones(16, 1, device=device)
    weight = Fp8Weight(
        a, torch.ones(1, 16, device=device), torch.ones(16, device=device).bfloat16()
    )
    try:
        scaled_mm(a, scale_a, weight, with_bias=True)
    except RuntimeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Fp8Layer:
    qkv: Fp8Weight
    out: Fp8Weight
    up: Fp8Weight
    down: Fp8Weight
    norm1_weight: Tensor
    norm1_bias: Tensor
    norm1_eps: float
    norm2_weight: Tensor
    norm2_bias: Tensor
    norm2_eps: float
    gelu_approximate: str


_GELU_APPROXIMATIONS = {
    "gelu": "none",
    "gelu_new": "tanh",
    "gelu_pytorch_tanh": "tanh",
    "gelu_fast": "tanh",
}


def fp8_model_obstacle(packed: PackedEncoder, hidden_act: str) -> str | None:
    """Why this encoder's layers cannot run in FP8 (shape or activation), or None."""
    if hidden_act not in _GELU_APPROXIMATIONS:
        return f"activation {hidden_act!r} is not a GELU"
    for layer in packed.layers:
        for name, weight in (
            ("qkv", layer.qkv_weight),
            ("out", layer.out_weight),
            ("up", layer.up_weight),
            ("down", layer.down_weight),
        ):
            rows, cols = weight.shape
            if rows % 16 or cols % 16:
                return f"{name} weight {tuple(weight.shape)} is not a multiple of 16 (FP8 GEMM)"
        if any(getattr(norm, "bias", None) is None for norm in (layer.norm1, layer.norm2)):
            return "LayerNorm without a bias"
    return None


class Fp8Encoder(PackedEncoder):
    """PackedEncoder whose encoder layers run their matrix products in FP8."""

    def __init__(
        self,
        model: Any,
        *,
        compile_kernels: bool,
        scaled_mm_bias: bool = True,
    ) -> None:
        super().__init__(model, fused_gelu=False, fused_norm=False)
        hidden_act = str(model.config.hidden_act)
        obstacle = fp8_model_obstacle(self, hidden_act)
        if obstacle is not None:
            raise ValueError(obstacle)
        approximate = _GELU_APPROXIMATIONS[hidden_act]
        self.kernels = Fp8Kernels.build(self.word.device, compile_kernels=compile_kernels)
        # where _scaled_mm takes no bias with rowwise scales, the bias joins the fused kernels
        self.scaled_mm_bias = scaled_mm_bias and scaled_mm_takes_bias(self.word.device)
        self.fp8_layers = [_quantized(layer, approximate) for layer in self.layers]
        # the bf16 copy of the fused QKV weight made by PackedEncoder is no longer needed
        self.layers = []

    def hidden_states(
        self,
        input_ids: Tensor,
        positions: Tensor,
        token_types: Tensor | None,
        layout: PackedLayout,
        attention: AttentionFn,
    ) -> Tensor:
        kernels = self.kernels
        x = F.embedding(input_ids, self.word) + F.embedding(positions, self.position)
        if self.token_type is not None:
            if token_types is None:
                x = x + self.token_type[0]
            else:
                x = x + F.embedding(token_types, self.token_type)
        norm = self.embedding_norm
        assert norm.bias is not None
        x, xq, xs = kernels.norm_quant(x, norm.weight, norm.bias, norm.eps)
        tokens = x.shape[0]
        in_mm = self.scaled_mm_bias
        for layer in self.fp8_layers:
            qkv = scaled_mm(xq, xs, layer.qkv, with_bias=in_mm)
            if not in_mm:
                qkv = _bias_add(qkv, layer.qkv.bias)
            q, k, v = qkv.view(tokens, 3, self.num_heads, self.head_dim).unbind(1)
            context = attention(q, k, v, layout).reshape(tokens, self.hidden_size)
            cq, cs = kernels.quant(context)
            out = scaled_mm(cq, cs, layer.out, with_bias=in_mm)
            x, xq, xs = kernels.add_norm_quant(
                out,
                None if in_mm else layer.out.bias,
                x,
                layer.norm1_weight,
                layer.norm1_bias,
                layer.norm1_eps,
            )
            h = scaled_mm(xq, xs, layer.up, with_bias=in_mm)
            hq, hs = kernels.gelu_quant(h, None if in_mm else layer.up.bias, layer.gelu_approximate)
            down = scaled_mm(hq, hs, layer.down, with_bias=in_mm)
            x, xq, xs = kernels.add_norm_quant(
                down,
                None if in_mm else layer.down.bias,
                x,
                layer.norm2_weight,
                layer.norm2_bias,
                layer.norm2_eps,
            )
        return x


def _quantized(layer: _Layer, approximate: str) -> _Fp8Layer:
    assert layer.norm1.bias is not None
    assert layer.norm2.bias is not None
    return _Fp8Layer(
        qkv=quantize_weight(layer.qkv_weight, layer.qkv_bias),
        out=quantize_weight(layer.out_weight, layer.out_bias),
        up=quantize_weight(layer.up_weight, layer.up_bias),
        down=quantize_weight(layer.down_weight, layer.down_bias),
        norm1_weight=layer.norm1.weight,
        norm1_bias=layer.norm1.bias,
        norm1_eps=float(layer.norm1.eps),
        norm2_weight=layer.norm2.weight,
        norm2_bias=layer.norm2.bias,
        norm2_eps=float(layer.norm2.eps),
        gelu_approximate=approximate,
    )
