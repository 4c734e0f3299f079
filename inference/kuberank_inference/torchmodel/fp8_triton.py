"""Triton kernels that write an activation and its rowwise FP8 copy in one pass (CUDA only).

One program per row (token): the row is read once into registers, the producer (residual add +
LayerNorm, or bias + gelu) runs in float32, the bf16 result is written where a later residual
needs it, and the row's largest magnitude sets its scale (amax / 448) for the e4m3 copy that
feeds the next `torch._scaled_mm`. On an H200 inductor's code for the same functions (two
dependent reductions per row) ran 3-4x slower than these, so they are written by hand.

Imported only on CUDA; torchmodel.fp8 keeps torch versions of every kernel for CPU and tests.
"""

# the kernels' parameters are Triton's to type (pointers, constexpr)
# mypy: disable-error-code="no-untyped-def"

from __future__ import annotations

import torch
import triton  # type: ignore[import-untyped]
import triton.language as tl  # type: ignore[import-untyped]
from torch import Tensor

# Triton kernels read no Python globals: the e4m3 limit (448) and the least amax (1e-12,
# so that a row of zeros gets a scale above 0) are written into them as literals.


@triton.jit  # type: ignore[untyped-decorator]
def _add_norm_quant_kernel(
    x_ptr,
    bias_ptr,
    residual_ptr,
    weight_ptr,
    norm_bias_ptr,
    y_ptr,
    q_ptr,
    scale_ptr,
    n_cols,
    eps,
    has_bias: tl.constexpr,
    has_residual: tl.constexpr,
    block: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, block)
    mask = cols < n_cols
    offsets = row * n_cols + cols
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if has_bias:
        x += tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    if has_residual:
        x += tl.load(residual_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols
    centred = tl.where(mask, x - mean, 0.0)
    var = tl.sum(centred * centred, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    norm_bias = tl.load(norm_bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = (centred * rstd * weight + norm_bias).to(tl.bfloat16)
    tl.store(y_ptr + offsets, y, mask=mask)
    yf = y.to(tl.float32)
    amax = tl.max(tl.where(mask, tl.abs(yf), 0.0), axis=0)
    scale = tl.maximum(amax, 1e-12) / 448.0
    q = tl.minimum(tl.maximum(yf / scale, -448.0), 448.0)
    tl.store(q_ptr + offsets, q.to(tl.float8e4nv), mask=mask)
    tl.store(scale_ptr + row, scale)


@triton.jit  # type: ignore[untyped-decorator]
def _gelu_quant_kernel(
    h_ptr,
    bias_ptr,
    q_ptr,
    scale_ptr,
    n_cols,
    has_bias: tl.constexpr,
    tanh: tl.constexpr,
    apply_gelu: tl.constexpr,
    block: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, block)
    mask = cols < n_cols
    offsets = row * n_cols + cols
    h = tl.load(h_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if has_bias:
        # the bf16 path adds the bias in the product's epilogue, then rounds to bf16
        h = (h + tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)).to(tl.bfloat16)
        h = h.to(tl.float32)
    if apply_gelu:
        if tanh:
            inner = 0.7978845608028654 * (h + 0.044715 * h * h * h)
            g = 0.5 * h * (1.0 + (2.0 * tl.sigmoid(2.0 * inner) - 1.0))
        else:
            g = 0.5 * h * (1.0 + tl.erf(h * 0.7071067811865476))
    else:
        g = h
    g = g.to(tl.bfloat16).to(tl.float32)
    amax = tl.max(tl.where(mask, tl.abs(g), 0.0), axis=0)
    scale = tl.maximum(amax, 1e-12) / 448.0
    q = tl.minimum(tl.maximum(g / scale, -448.0), 448.0)
    tl.store(q_ptr + offsets, q.to(tl.float8e4nv), mask=mask)
    tl.store(scale_ptr + row, scale)


def _warps(block: int) -> int:
    return 4 if block <= 1024 else 8 if block <= 4096 else 16


def add_norm_quant(
    x: Tensor, bias: Tensor | None, residual: Tensor, weight: Tensor, norm_bias: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """LayerNorm(x + bias + residual): (bf16 result, its e4m3 copy, [rows, 1] fp32 scales)."""
    return _norm_quant(x, bias, residual, weight, norm_bias, eps)


def norm_quant(
    x: Tensor, weight: Tensor, norm_bias: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    return _norm_quant(x, None, None, weight, norm_bias, eps)


def _norm_quant(
    x: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    weight: Tensor,
    norm_bias: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    x = x.contiguous()
    rows, cols = x.shape
    y = torch.empty((rows, cols), device=x.device, dtype=torch.bfloat16)
    q = torch.empty((rows, cols), device=x.device, dtype=torch.float8_e4m3fn)
    scale = torch.empty((rows, 1), device=x.device, dtype=torch.float32)
    if rows:
        block = triton.next_power_of_2(cols)
        _add_norm_quant_kernel[(rows,)](
            x,
            x if bias is None else bias,
            x if residual is None else residual.contiguous(),
            weight,
            norm_bias,
            y,
            q,
            scale,
            cols,
            eps,
            has_bias=bias is not None,
            has_residual=residual is not None,
            block=block,
            num_warps=_warps(block),
        )
    return y, q, scale


def _rows_quant(
    h: Tensor, bias: Tensor | None, *, gelu: bool, approximate: str
) -> tuple[Tensor, Tensor]:
    h = h.contiguous()
    rows, cols = h.shape
    q = torch.empty((rows, cols), device=h.device, dtype=torch.float8_e4m3fn)
    scale = torch.empty((rows, 1), device=h.device, dtype=torch.float32)
    if rows:
        block = triton.next_power_of_2(cols)
        _gelu_quant_kernel[(rows,)](
            h,
            h if bias is None else bias,
            q,
            scale,
            cols,
            has_bias=bias is not None,
            tanh=approximate == "tanh",
            apply_gelu=gelu,
            block=block,
            num_warps=_warps(block),
        )
    return q, scale


def gelu_quant(h: Tensor, bias: Tensor | None, approximate: str) -> tuple[Tensor, Tensor]:
    """gelu(h + bias), rounded to bf16 as the bf16 path would, then quantized per row."""
    return _rows_quant(h, bias, gelu=True, approximate=approximate)


def quant(x: Tensor) -> tuple[Tensor, Tensor]:
    """Rowwise e4m3 copy of a bf16 [rows, cols] activation (the attention output)."""
    return _rows_quant(x, None, gelu=False, approximate="none")
