"""FP8 probe for a GPU machine: versions, the rowwise-scaled FP8 product against bf16 at the
benchmark's layer shapes, the fused quantizing kernels, and the quality gate's agreement (FP8 and
bf16 against float32) on MiniLM and the benchmark shapes, with offline pairs/s bf16 against FP8.

    python -m bench.inference.fp8_probe --out DIR [--minilm DIR] [--shapes large,base]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _bench(fn: Any, *, repeat: int = 20) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return float(statistics.median(times))


def products(report: dict[str, Any]) -> None:
    import torch
    import torch.nn.functional as F  # noqa: N812

    from kuberank_inference.torchmodel import fp8

    rows = 16384
    report["scaled_mm_takes_bias"] = fp8.scaled_mm_takes_bias(torch.device("cuda"))
    table = []
    quant = torch.compile(fp8.quantize_rows, dynamic=True)
    for n, k in ((3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096)):
        a = torch.randn(rows - 3, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        b = torch.randn(n, device="cuda", dtype=torch.bfloat16) * 0.02
        aq, scale = fp8.quantize_rows(a)
        weight = fp8.quantize_weight(w, b)
        with_bias = report["scaled_mm_takes_bias"]
        out = fp8.scaled_mm(aq, scale, weight, with_bias=with_bias)
        if not with_bias:
            out = out + b
        ref = a.double() @ w.double().t() + b.double()
        error = float((out.double() - ref).norm() / ref.norm())
        flops = 2 * a.shape[0] * n * k
        t_bf16 = _bench(lambda a=a, w=w, b=b: F.linear(a, w, b))
        t_fp8 = _bench(
            lambda aq=aq, scale=scale, weight=weight, bias=with_bias: fp8.scaled_mm(
                aq, scale, weight, with_bias=bias
            )
        )
        t_quant = _bench(lambda a=a: quant(a))
        table.append(
            {
                "n": n,
                "k": k,
                "rel_error": error,
                "bf16_tflops": flops / t_bf16 / 1e12,
                "fp8_tflops": flops / t_fp8 / 1e12,
                "quant_us": t_quant * 1e6,
            }
        )
    report["products"] = table
    # the fused producers against eager bf16 producers
    h = 1024
    x = torch.randn(rows, h, device="cuda", dtype=torch.bfloat16)
    r = torch.randn(rows, h, device="cuda", dtype=torch.bfloat16)
    g, bn = torch.ones(h, device="cuda", dtype=torch.bfloat16), torch.zeros(h, device="cuda")
    bn = bn.bfloat16()
    kernels = fp8.Fp8Kernels.build(torch.device("cuda"), compile_kernels=True)
    inductor = fp8.Fp8Kernels.build(torch.device("cpu"), compile_kernels=True)
    up = torch.randn(rows, 4 * h, device="cuda", dtype=torch.bfloat16)
    report["fused"] = {
        "add_norm_bf16_us": _bench(lambda: F.layer_norm(x + r, (h,), g, bn, 1e-5)) * 1e6,
        "add_norm_quant_us": _bench(lambda: kernels.add_norm_quant(x, None, r, g, bn, 1e-5)) * 1e6,
        "gelu_bf16_us": _bench(lambda: F.gelu(up)) * 1e6,
        "gelu_quant_us": _bench(lambda: kernels.gelu_quant(up, None, "none")) * 1e6,
        "kind": kernels.kind,
        "inductor_add_norm_quant_us": _bench(
            lambda: inductor.add_norm_quant(x, None, r, g, bn, 1e-5)
        )
        * 1e6,
    }
    # the Triton kernels against the torch reference
    y_ref, q_ref, s_ref = fp8._add_norm_quant(x, None, r, g, bn, 1e-5)
    y, q, s = kernels.add_norm_quant(x, None, r, g, bn, 1e-5)
    qg_ref, sg_ref = fp8._gelu_quant(up, None, "none")
    qg, sg = kernels.gelu_quant(up, None, "none")
    report["triton_vs_torch"] = {
        "norm_y": float((y.float() - y_ref.float()).norm() / y_ref.float().norm()),
        "norm_deq": float(
            (fp8.dequantize_rows(q, s) - fp8.dequantize_rows(q_ref, s_ref)).norm()
            / fp8.dequantize_rows(q_ref, s_ref).norm()
        ),
        "gelu_deq": float(
            (fp8.dequantize_rows(qg, sg) - fp8.dequantize_rows(qg_ref, sg_ref)).norm()
            / fp8.dequantize_rows(qg_ref, sg_ref).norm()
        ),
    }
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        kernels.add_norm_quant(x, None, r, g, bn, 1e-5)
        kernels.gelu_quant(up, None, "none")
        torch.cuda.synchronize()
    report["fused_kernels"] = [e.key for e in prof.key_averages() if e.device_type.name == "CUDA"]


def runner(path: Path, task: str, dtype: str, device: str = "cuda", **extra: Any) -> Any:
    from kuberank_inference.sources import ModelSource
    from kuberank_inference.torchmodel.runner import RunnerSettings, TorchRunner

    return TorchRunner(
        RunnerSettings(
            source=ModelSource(path, path.name),
            task=task,  # type: ignore[arg-type]
            device=device,
            dtype=dtype,
            attention="packed",
            max_input_length=0,
            model_id=None,
            vram_safety_margin=0.1,
            fused_gelu=True,
            fused_norm=True,
            **extra,
        )
    )


def throughput(model: Any, *, tokens: int) -> float:
    """Offline pairs/s on synthetic batches of about `tokens` tokens, sequences near 288."""
    import numpy as np
    import torch

    from kuberank_inference.torchmodel.tokenizing import Encoded

    generator = np.random.default_rng(0)
    vocab = int(model._hf.config.vocab_size)
    seqs = []
    total = 0
    while total < tokens:
        size = int(generator.integers(73, 509))
        ids = generator.integers(1000, min(vocab, 30000), size=size, dtype=np.int32)
        types = np.zeros(size, dtype=np.int32)
        seqs.append(Encoded(ids, types if model._uses_type_ids else None))
        total += size

    def once() -> None:
        model.finish_batch(model.start_batch(seqs))

    seconds = _bench(once, repeat=10)
    torch.cuda.synchronize()
    return len(seqs) / seconds


def agreement_of(name: str, path: Path, task: str, report: dict[str, Any]) -> None:
    import torch

    from kuberank_inference.quality import agreement

    entry: dict[str, Any] = {}
    started = time.monotonic()
    fp8 = runner(path, task, "fp8", fp8_min_spearman=0.0, fp8_min_top_k_overlap=0.0)
    entry["fp8_start_s"] = round(time.monotonic() - started, 1)
    precision = fp8.info.precision
    entry["precision"] = precision.as_json() if precision else None
    entry["attention_fp8"] = fp8.info.attention
    s_fp8 = fp8.gate_scores(fp8._packed)
    entry["fp8_pairs_per_s_16k"] = throughput(fp8, tokens=16384)
    entry["fp8_pairs_per_s_64k"] = throughput(fp8, tokens=65536)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        throughput_once(fp8)
    entry["fp8_profile"] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18)
    del fp8
    bf16 = runner(path, task, "bfloat16")
    entry["attention_bf16"] = bf16.info.attention
    s_bf16 = bf16.gate_scores(bf16._packed)
    entry["bf16_pairs_per_s_16k"] = throughput(bf16, tokens=16384)
    entry["bf16_pairs_per_s_64k"] = throughput(bf16, tokens=65536)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        throughput_once(bf16)
    entry["bf16_profile"] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12)
    del bf16
    fp32 = runner(path, task, "float32")
    s_fp32 = fp32.gate_scores(fp32._packed)
    del fp32
    torch.cuda.empty_cache()
    entry["bf16_vs_fp32"] = agreement(s_fp32, s_bf16).as_json()
    entry["fp8_vs_bf16"] = agreement(s_bf16, s_fp8).as_json()
    entry["fp8_vs_fp32"] = agreement(s_fp32, s_fp8).as_json()
    spread = [max(s) - min(s) for s in s_fp32]
    entry["fp32_score_spread_mean"] = statistics.mean(spread)
    report[name] = entry
    print(name, json.dumps({k: v for k, v in entry.items() if "profile" not in k}), flush=True)


def throughput_once(model: Any) -> None:
    throughput(model, tokens=16384)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minilm", type=Path, default=Path(".bench-assets/minilm"))
    parser.add_argument("--tokenizer", type=Path, default=Path(".bench-assets/tokenizer"))
    parser.add_argument("--shapes", default="base,large")
    parser.add_argument("--skip-products", action="store_true")
    args = parser.parse_args()
    import torch

    report: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
    }
    try:
        import triton  # type: ignore[import-untyped]

        report["triton"] = triton.__version__
    except ImportError:
        report["triton"] = None
    print(json.dumps(report), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if not args.skip_products:
            products(report)
            print(
                json.dumps(
                    {
                        k: report[k]
                        for k in ("products", "fused", "fused_kernels", "triton_vs_torch")
                    }
                )
            )
        if args.minilm.is_dir():
            agreement_of("minilm", args.minilm, "embed", report)
        from bench.inference.models import SHAPES, build_model_dir

        with tempfile.TemporaryDirectory() as scratch:
            for shape in filter(None, args.shapes.split(",")):
                target = Path(scratch) / shape
                target.mkdir()
                build_model_dir(SHAPES[shape], target, tokenizer_dir=args.tokenizer)
                agreement_of(shape, target, "rerank", report)
    finally:
        (args.out / "fp8_probe.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        for key, entry in report.items():
            if isinstance(entry, dict):
                for name in ("fp8_profile", "bf16_profile"):
                    if name in entry:
                        print(f"--- {key} {name}\n{entry[name]}")


if __name__ == "__main__":
    main()
