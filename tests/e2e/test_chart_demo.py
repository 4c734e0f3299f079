"""`make demo` tells the whole story on its own cluster, and `make cluster-down` leaves nothing.

Runs the same command as the Makefile target (`python -m localcluster demo`) in a private
state directory, so it never meets the session's cluster or a developer's `make cluster-up`.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import psutil

from tests.e2e.subprocesses import localcluster_cli


def run_cli(command: str, state_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    # the kwok story; step 8's real containers: tests/e2e/test_demo_real_pods.py
    return localcluster_cli(command, state_dir=state_dir, real_node=False, timeout=timeout)


def test_demo_answers_a_query_on_a_ready_rerankerdeployment_and_cleans_up(tmp_path: Path) -> None:
    state_dir = tmp_path / "cluster"
    pids: list[int] = []
    try:
        demo = run_cli("demo", state_dir, timeout=400)
        out = demo.stdout
        assert demo.returncode == 0, out + demo.stderr
        steps = re.findall(r"^==> \[(\d)/8\]", out, flags=re.MULTILINE)
        assert steps == [str(n) for n in range(1, 9)], out
        # without a real node step 8 says why and goes on
        skipped = r"^==> \[8/8\] real containers: skipped: .*KUBERANK_REAL_NODE=0"
        assert re.search(skipped, out, flags=re.MULTILINE), out
        # The ranked answer: the memory document first, all five documents ranked.
        ranked = re.findall(r"^\s+(\d)\. score [+-]\d\.\d{3}\s+\[(\d)\]", out, flags=re.MULTILINE)
        assert [place for place, _ in ranked] == ["1", "2", "3", "4", "5"], out
        assert ranked[0][1] == "0", out
        # `kubectl get rrd` shows the example Ready with both replicas.
        assert re.search(
            r"bge-reranker\s+BAAI/bge-reranker-v2-m3\s+nvidia.com/gpu\s+2/2\s+Ready", out
        )
        record = json.loads((state_dir / "cluster.json").read_text())
        names = {c["name"] for c in record["components"]}
        assert {"demo-operator", "demo-inference", "demo-sidecar"} <= names
        pids += [c["pid"] for c in record["components"]]
        assert all(psutil.pid_exists(pid) for pid in pids)
    finally:
        down = run_cli("down", state_dir, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "demo-operator, demo-inference, demo-sidecar" in down.stdout
    assert not state_dir.exists()
    left = [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert left == []
