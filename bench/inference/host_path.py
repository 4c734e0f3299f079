"""The host path alone: the real server (aiohttp, payload parsing, the batch engine, the real
tokenizer, numpy collation into the packed arrays) with a model that costs nothing, driven by the
same closed-loop load as bench_rerank. It reports what the server spends per pair in CPU time
(every thread), and what the load generator spends, so that a change to the host path is
measured on any machine, without a GPU.

    PYTHONPATH=inference:. python3 -m bench.inference.host_path --seconds 20 --concurrency 64

Not a test: it prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.inference.bench_rerank import DOCS_PER_REQUEST, REPO, default_tokenizer_dir, free_port
from bench.inference.load import closed_loop
from bench.inference.workload import make_requests, vocabulary_words


class HostOnlyRunner:
    """The real tokenizer and the runner's collation (one flat int32 buffer per batch, as the
    packed forward builds it); the 'device' returns zeros at once."""

    def __init__(self, tokenizer_dir: Path, *, max_length: int = 512) -> None:
        from tokenizers import Tokenizer

        from kuberank_inference.engine.contracts import ModelInfo
        from kuberank_inference.torchmodel.tokenizing import TokenizerSpec

        backend = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        self._spec = TokenizerSpec(backend.to_str(), max_length=max_length, uses_type_ids=True)
        self._tokenizer = self._spec.build()
        self.info = ModelInfo(
            model_id="host-only",
            source=str(tokenizer_dir),
            task="rerank",
            architecture="HostOnly",
            device="cpu",
            dtype="float32",
            max_input_length=max_length,
            padding_free=True,
            attention="none",
            embedding_dimension=None,
            score_activation="identity",
            normalizes_embeddings=False,
        )

    def encode(self, request: Any, *, abandoned: Any = None) -> list[Any]:
        return list(self._tokenizer.encode(request, abandoned=abandoned))

    def tokenizer_spec(self) -> Any:
        """What the server's tokenizer processes (its default) build their tokenizer from."""
        return self._spec

    def start_batch(self, sequences: Sequence[Any]) -> Any:
        count = len(sequences)
        lengths = np.fromiter((s.num_tokens for s in sequences), dtype=np.int32, count=count)
        cu = np.zeros(count + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu[1:])
        positions = np.arange(int(cu[-1]), dtype=np.int32) - np.repeat(cu[:-1], lengths)
        parts = [np.concatenate([s.ids for s in sequences]), positions]
        parts.append(np.concatenate([s.type_ids for s in sequences if s.type_ids is not None]))
        parts.append(cu)
        np.concatenate(parts)
        return count

    def finish_batch(self, handle: Any) -> list[Any]:
        return [0.0] * int(handle)

    def device_memory(self) -> None:
        return None

    def warm_up(self, *, max_batch_tokens: int) -> None:
        pass

    def activation_bytes_per_token(self, *, tokens: int) -> float:
        return 0.0

    def resident_bytes(self) -> int:
        return 0

    def free_device_bytes(self) -> None:
        return None

    def device_uuids(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def _serve(port: int, tokenizer_dir: Path, extra: list[str]) -> int:
    from kuberank_inference.config import parse_config
    from kuberank_inference.serving import serve

    flags = ["--model", "host-only", "--device", "cpu", "--host", "127.0.0.1"]
    config = parse_config([*flags, "--port", str(port), "--max-concurrent-pairs", "100000", *extra])
    return asyncio.run(serve(config, load_model=lambda: HostOnlyRunner(tokenizer_dir)))


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its live descendants (the tokenizer processes)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:  # gone
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_cpu_seconds(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in path.read_text().split()]
        except OSError:
            continue
    return found


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server not ready")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    words = vocabulary_words(args.tokenizer_dir)
    requests = make_requests(
        words, count=40, documents=DOCS_PER_REQUEST, mean_tokens=args.mean_tokens, seed=11
    )
    bodies = [request.body() for request in requests]
    port = free_port()
    env = dict(os.environ)
    # a PYTHONPATH given first: the same load against another tree's server code
    given = [part for part in env.get("PYTHONPATH", "").split(os.pathsep) if part]
    env["PYTHONPATH"] = os.pathsep.join([*given, str(REPO / "inference"), str(REPO)])
    command = [sys.executable, "-m", "bench.inference.host_path", "--serve", str(port)]
    command += ["--tokenizer-dir", str(args.tokenizer_dir), "--", *args.server_args.split()]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        server_before = _cpu_seconds(process.pid)
        client_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        result = asyncio.run(
            closed_loop(
                f"{url}/rerank",
                bodies,
                pairs_per_request=DOCS_PER_REQUEST,
                concurrency=args.concurrency,
                duration=args.seconds,
                warmup=0.0,
                processes=args.client_processes,
            )
        )
        wall = time.perf_counter() - started
        server_cpu = _cpu_seconds(process.pid) - server_before
        client_after = resource.getrusage(resource.RUSAGE_SELF)
        client_cpu = (client_after.ru_utime - client_before.ru_utime) + (
            client_after.ru_stime - client_before.ru_stime
        )
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        process.terminate()
        process.wait(timeout=60)
    pairs = max(1, result.pairs)
    return {
        "server_args": args.server_args,
        "concurrency": args.concurrency,
        "client_processes": args.client_processes,
        "pairs_per_s": round(result.pairs_per_second, 1),
        "p50_ms": round(result.p50 * 1e3, 1),
        "server_cpu_us_per_pair": round(server_cpu / pairs * 1e6, 1),
        "client_cpu_us_per_pair": round(client_cpu / pairs * 1e6, 1),
        "client_children_cpu_s": round(children.ru_utime + children.ru_stime, 2),
        "wall_s": round(wall, 1),
        "errors": result.errors,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-dir", type=Path, default=default_tokenizer_dir())
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--mean-tokens", type=int, default=288)
    parser.add_argument("--server-args", default="", help="extra server flags, one string")
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return _serve(args.serve, args.tokenizer_dir, args.rest)
    print(json.dumps(measure(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
