"""Start the real kuberank-sidecar as a subprocess on a free loopback port, for tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, *, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return str(reply.read().decode())


@contextmanager
def running_sidecar(
    args: Sequence[str], *, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Yield (process, base URL) once /healthz answers; kill the process at the end."""
    port = free_port()
    exe = Path(sys.executable).parent / "kuberank-sidecar"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(exe), "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"sidecar exited with {proc.returncode}: {log.read_text()}")
            try:
                json.loads(get(base + "/healthz", timeout=2))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
