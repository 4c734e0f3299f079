"""Sidecar benchmark: /metrics latency (p50/p99), one NVML poll's cost, and the sidecar's CPU use.

Runs the real sidecar as a subprocess on loopback and scrapes it over HTTP. Examples:
    python bench/sidecar/bench_scrape.py --backend fake --fake-profile h100x8 --devices all
    python bench/sidecar/bench_scrape.py --backend nvml --devices all --cpu-window 60
Prints one JSON object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (no psutil needed on the GPU host)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _scrape(conn: http.client.HTTPConnection) -> tuple[float, int]:
    started = time.perf_counter()
    conn.request("GET", "/metrics")
    reply = conn.getresponse()
    body = reply.read()
    elapsed = time.perf_counter() - started
    if reply.status != 200:
        raise RuntimeError(f"/metrics answered {reply.status}")
    return elapsed, len(body)


def _nvml_reads(args: argparse.Namespace) -> dict[str, float] | None:
    """Time full reads of each device through the backend, in this process."""
    if args.nvml_reads <= 0:
        return None
    sys.path.insert(0, str(REPO / "sidecar"))
    from kuberank_sidecar.fake_nvml import FakeNvml
    from kuberank_sidecar.nvml_adapter import RealNvml

    backend = RealNvml() if args.backend == "nvml" else FakeNvml(args.fake_profile)
    backend.open()
    try:
        gpus = backend.discover().gpus
        times = []
        for _ in range(args.nvml_reads):
            for gpu in gpus:
                started = time.perf_counter()
                backend.read_gpu(gpu)
                times.append(time.perf_counter() - started)
    finally:
        backend.close()
    return {
        "gpus": len(gpus),
        "reads": len(times),
        "p50_ms": _percentile(times, 0.5) * 1e3,
        "p99_ms": _percentile(times, 0.99) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="fake", choices=["fake", "nvml"])
    parser.add_argument("--fake-profile", default="h100x8")
    parser.add_argument("--devices", default="all")
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=15.0, help="sidecar --interval (s)")
    parser.add_argument(
        "--cpu-window", type=float, default=60.0, help="seconds of idle CPU measurement"
    )
    parser.add_argument("--nvml-reads", type=int, default=100, help="full device reads to time")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "sidecar"), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable, "-m", "kuberank_sidecar.cli", "--host", "127.0.0.1", "--port", str(port),
        "--backend", args.backend, "--fake-profile", args.fake_profile, "--devices", args.devices,
        "--interval", str(args.interval), "--tuning-journal", "", "--log-level", "WARNING",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        for _ in range(50):
            _scrape(conn)
        latencies, size = [], 0
        for _ in range(args.scrapes):
            elapsed, size = _scrape(conn)
            latencies.append(elapsed)
        # Idle CPU at the configured interval, with one scrape every 15 s like Prometheus.
        cpu_before, wall_before = _cpu_seconds(proc.pid), time.monotonic()
        while time.monotonic() - wall_before < args.cpu_window:
            time.sleep(min(15.0, max(0.0, args.cpu_window - (time.monotonic() - wall_before))))
            _scrape(conn)
        cpu_used = _cpu_seconds(proc.pid) - cpu_before
        window = time.monotonic() - wall_before
    finally:
        proc.terminate()
        proc.wait(20)
    result = {
        "backend": args.backend,
        "profile": args.fake_profile if args.backend == "fake" else None,
        "devices": args.devices,
        "host": platform.node(),
        "python": platform.python_version(),
        "scrape": {
            "count": len(latencies),
            "bytes": size,
            "p50_ms": _percentile(latencies, 0.5) * 1e3,
            "p99_ms": _percentile(latencies, 0.99) * 1e3,
            "mean_ms": statistics.fmean(latencies) * 1e3,
        },
        "cpu": {
            "interval_s": args.interval,
            "window_s": window,
            "cpu_seconds": cpu_used,
            "percent_of_one_core": 100.0 * cpu_used / window,
        },
        "nvml_read": _nvml_reads(args),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
