"""Child processes of the e2e tests (the harness's own command line among them) and one HTTP
request to them, all on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localcluster.cluster import KEEP_LOGS_ENV

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
# Child processes share two cores with the whole suite: one torch thread each.
QUIET_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """One HTTP request on loopback; (status, parsed JSON body or text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def spawn(
    args: list[str], *, log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A child process writing stdout and stderr to `log` (the parent keeps no handle)."""
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def localcluster_cli(
    command: str, *, state_dir: Path, real_node: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`python -m localcluster COMMAND` on a cluster of its own in `state_dir`, with or without
    the machine's one real node (which the session's cluster holds unless a test takes it)."""
    env = {
        **os.environ,
        "KUBERANK_CLUSTER_DIR": str(state_dir),
        "KUBERANK_REAL_NODE": "1" if real_node else "0",
    }
    env.pop(KEEP_LOGS_ENV, None)  # a throwaway cluster: its logs go with it
    return subprocess.run(
        [sys.executable, "-m", "localcluster", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
