"""Operator scale benchmark (not a test): many RerankerDeployments on many fake GPU nodes.

Starts a private local control plane (localcluster) with `--nodes` kwok GPU nodes,
applies the CRD, runs the real `kuberank-operator` as a subprocess (cluster-wide, defaults),
applies `--resources` RerankerDeployments at once and measures the time until every one
reports Ready, the operator's peak resident memory (sampled every 0.2 s), and what the
operator did (reconciles, applies, Events) from its own /metrics.

    .venv/bin/python -m bench.operator.scale                    # 200 resources, 50 nodes
    .venv/bin/python -m bench.operator.scale --write-results    # also update bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from localcluster import LocalCluster, wait_until
from localcluster.cluster import free_ports

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "rerankerdeployments.kuberank.dev.yaml"
RESULTS_MD = REPO / "bench" / "RESULTS.md"
RESULTS_DIR = REPO / "bench" / "operator" / "results"
SECTION = "## Operator scale"
OPERATOR = Path(sys.executable).parent / "kuberank-operator"
NAMESPACE = "bench"


@dataclass
class Result:
    resources: int
    replicas_each: int
    nodes: int
    gpus_per_node: int
    workers: int
    seconds_to_all_ready: float
    seconds_to_all_created: float
    peak_rss_mib: float
    idle_rss_mib: float
    reconciles: float
    applies: float
    events: float
    date: str
    commit: str
    host: str
    command: str


class RssSampler(threading.Thread):
    """Peak resident memory of one process (and its children), sampled in the background."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self._proc = psutil.Process(pid)
        self._interval = interval
        self._halt = threading.Event()
        self.peak = 0
        self.last = 0

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                rss = self._proc.memory_info().rss + sum(
                    c.memory_info().rss for c in self._proc.children(recursive=True)
                )
            except psutil.Error:
                return
            self.last = rss
            self.peak = max(self.peak, rss)
            self._halt.wait(self._interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def manifest(index: int, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "kuberank.dev/v1alpha1",
        "kind": "RerankerDeployment",
        "metadata": {"name": f"ranker-{index:03d}", "namespace": NAMESPACE},
        "spec": {
            "model": {
                "id": "BAAI/bge-reranker-v2-m3",
                "source": {"hostPath": {"path": "/var/lib/kuberank/models/bge-reranker-v2-m3"}},
            },
            "replicas": replicas,
        },
    }


def metric_total(text: str, name: str) -> float:
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+]+)$", re.MULTILINE)
    return sum(float(m.group(1)) for m in pattern.finditer(text))


def ready_count(cluster: LocalCluster) -> tuple[int, int]:
    """(resources Ready, resources with a status) in the bench namespace."""
    items = cluster.kubectl_json("get", "rrd", "-n", NAMESPACE, timeout=120)["items"]
    ready = sum(
        1
        for i in items
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (i.get("status") or {}).get("conditions") or []
        )
    )
    return ready, sum(1 for i in items if i.get("status"))


def git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def run(args: argparse.Namespace) -> Result:
    say = print
    say(f"==> local control plane with {args.nodes} fake GPU nodes × {args.gpus} GPUs")
    cluster = LocalCluster.start(with_default_nodes=False)
    try:
        for start in range(0, args.nodes, 25):
            count = min(25, args.nodes - start)
            cluster.add_gpu_nodes(count, prefix=f"scale{start // 25}", gpus=args.gpus, timeout=120)
        cluster.kubectl("apply", "--server-side", "-f", str(CRD))
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/rerankerdeployments.kuberank.dev"
        )
        cluster.kubectl("create", "namespace", NAMESPACE)
        port = free_ports(1)[0]
        log_path = Path(tempfile.gettempdir()) / "kuberank-bench-operator.log"
        say(f"==> operator log: {log_path}")
        log = log_path.open("wb")
        proc = subprocess.Popen(
            [str(OPERATOR), "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
             "--workers", str(args.workers), "--log-format", "json", "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=cluster.env(), start_new_session=True,
        )  # fmt: skip
        sampler = RssSampler(proc.pid)
        sampler.start()
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"

            def up() -> bool:
                try:
                    with urllib.request.urlopen(metrics_url, timeout=2):
                        return True
                except OSError:
                    return False

            wait_until(up, timeout=120, what="the operator's /metrics")
            time.sleep(3)  # let the initial listings settle before measuring idle memory
            idle = sampler.last
            say(f"==> applying {args.resources} RerankerDeployments × {args.replicas} replicas")
            batch = {
                "apiVersion": "v1",
                "kind": "List",
                "items": [manifest(i, args.replicas) for i in range(args.resources)],
            }
            started = time.monotonic()
            cluster.kubectl("apply", "-f", "-", input=json.dumps(batch), timeout=300)
            created_at = time.monotonic() - started
            ready = 0
            while ready < args.resources:
                if proc.poll() is not None:
                    raise RuntimeError(f"the operator exited with {proc.returncode}")
                if time.monotonic() - started > args.timeout:
                    raise TimeoutError(f"{ready}/{args.resources} Ready after {args.timeout} s")
                time.sleep(2)
                ready, with_status = ready_count(cluster)
                at = time.monotonic() - started
                say(f"    {at:6.1f} s: {ready} Ready, {with_status} with status")
            elapsed = time.monotonic() - started
            with urllib.request.urlopen(metrics_url, timeout=10) as response:
                text = response.read().decode()
        finally:
            # Stop the operator before anything else can fail, so no orphan outlives the run.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
            sampler.stop()
            log.close()
    finally:
        cluster.stop()
    return Result(
        resources=args.resources,
        replicas_each=args.replicas,
        nodes=args.nodes,
        gpus_per_node=args.gpus,
        workers=args.workers,
        seconds_to_all_ready=round(elapsed, 1),
        seconds_to_all_created=round(created_at, 1),
        peak_rss_mib=round(sampler.peak / 2**20, 1),
        idle_rss_mib=round(idle / 2**20, 1),
        reconciles=metric_total(text, "kuberank_operator_reconciles_total"),
        applies=metric_total(text, "kuberank_operator_applies_total"),
        events=metric_total(text, "kuberank_operator_events_total"),
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
        commit=git_commit(),
        host=f"{platform.node()} ({psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB)",
        command=" ".join(["python -m bench.operator.scale", *sys.argv[1:]]),
    )


def section(result: Result) -> str:
    pods = result.resources * result.replicas_each
    gpus = result.nodes * result.gpus_per_node
    header = [
        "resources × replicas",
        "nodes × GPUs",
        "kubectl apply done",
        "time to all Ready",
        "operator RSS idle → peak",
        "reconciles",
        "applies",
        "Events",
    ]
    row = [
        f"{result.resources} × {result.replicas_each} = {pods} pods",
        f"{result.nodes} × {result.gpus_per_node} = {gpus}",
        f"{result.seconds_to_all_created:.1f} s",
        f"{result.seconds_to_all_ready:.1f} s",
        f"{result.idle_rss_mib:.0f} → {result.peak_rss_mib:.0f} MiB",
        f"{result.reconciles:.0f}",
        f"{result.applies:.0f}",
        f"{result.events:.0f}",
    ]
    table = "\n".join(
        "| " + " | ".join(cells) + " |" for cells in (header, ["---"] * len(header), row)
    )
    return f"""{SECTION}

`bench/operator/scale.py` starts a private local control plane (real etcd, kube-apiserver,
controller-manager, scheduler; kwok nodes), runs the real `kuberank-operator` cluster-wide with
its defaults except `--workers {result.workers}`, applies all RerankerDeployments in one
`kubectl apply` and polls until every one reports `Ready`. Memory is the operator process's
resident set, sampled every 0.2 s. Raw JSON: `bench/operator/results/scale.json`.

{table}

Date {result.date}, commit `{result.commit}`, host {result.host}, shared with other helpers'
test runs; command: `{result.command}`. Both times count from the start of the `kubectl apply`
(client-side, one request per object). The time to Ready includes the API server creating the
objects, the scheduler binding {pods} pods and kwok marking them Running/Ready, all on the same
machine as the operator: an upper bound for the operator's own share. Applies and Events per
resource are exactly 3 (Deployment, Service, PodDisruptionBudget) and 4 (3 Created, 1 Ready)
when nothing is applied twice.
"""


def write_section(text: str) -> None:
    """Replace this benchmark's section of bench/RESULTS.md, or append it; leave the rest."""
    current = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    start = current.find(SECTION)
    if start < 0:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        following = current.find("\n## ", start + len(SECTION))
        end = len(current) if following < 0 else following + 1
        updated = current[:start] + text + ("\n" + current[end:] if following >= 0 else "")
    RESULTS_MD.write_text(updated)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.operator.scale", description=__doc__)
    parser.add_argument("--resources", type=int, default=200, help="RerankerDeployments")
    parser.add_argument("--replicas", type=int, default=2, help="pods (GPUs) per resource")
    parser.add_argument("--nodes", type=int, default=50, help="fake GPU nodes")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    parser.add_argument("--workers", type=int, default=4, help="operator --workers")
    parser.add_argument("--timeout", type=float, default=1200, help="give up after seconds")
    parser.add_argument(
        "--write-results", action="store_true", help="update the section in bench/RESULTS.md"
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="do not measure: re-render the section from bench/operator/results/scale.json",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        saved = Result(**json.loads((RESULTS_DIR / "scale.json").read_text()))
        print(section(saved))
        if args.write_results:
            write_section(section(saved))
        return 0
    if args.resources * args.replicas > args.nodes * args.gpus:
        parser.error("--resources × --replicas exceeds --nodes × --gpus: not all could be Ready")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (RESULTS_DIR / "scale.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    text = section(result)
    print(text)
    if args.write_results:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
