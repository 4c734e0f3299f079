"""Decision latency benchmark (not a test): from a scale-up threshold's `for` expiring to the
replica change written, for the builtin evaluator and for the Alertmanager webhook path.

A private local control plane (localcluster) runs one RerankerDeployment (1 replica) with
a real GPU sidecar (fake NVML backend, polling every 0.25 s) on each kwok pod's loopback IP and
the real `kuberank-operator`. Each trial waits a random part of an interval (so trials sample
every phase of the evaluation clock), then at t0 sets every fake GPU to 97 % utilization (scale-up
threshold 90 %, forSeconds F) and watches the RerankerDeployment until spec.replicas becomes 2.
Latency = time the watch saw the change - (t0 + F). Then utilization goes back to 5 % and
replicas to 1 (`kubectl scale`), and the next trial starts after two quiet intervals.

- builtin: `--builtin-evaluator=true`, spec.autoscaling.intervalSeconds = I.
- webhook: `--builtin-evaluator=false --alert-webhook=true`; Debian's Prometheus (scrape and rule
  evaluation every I, pods found through the operator's HTTP service discovery) with the
  PrometheusRule groups rendered for the resource; Debian's Alertmanager (group_wait 0s) posting
  to the operator.

    .venv/bin/python -m bench.operator_scaling.decision_latency                  # 8 trials each
    .venv/bin/python -m bench.operator_scaling.decision_latency --write-results  # + RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import secrets
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcluster import LocalCluster, running_cluster, wait_until
from tests.e2e.autoscaling_support import Namespace, operator_rules_yaml, reranker
from tests.e2e.monitoring import Monitoring
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.pod_servers import PodServers
from tests.e2e.rerankers import install_crd

REPO = Path(__file__).resolve().parents[2]
RESULTS_MD = REPO / "bench" / "RESULTS.md"
RESULTS_JSON = REPO / "bench" / "operator_scaling" / "results" / "decision-latency.json"
SECTION = "## Decision latency"
NAME = "latency"


@dataclass
class PathResult:
    path: str
    interval_s: float
    for_s: float
    trials: list[float]

    @property
    def summary(self) -> dict[str, float]:
        ordered = sorted(self.trials)
        return {
            "min": ordered[0],
            "median": statistics.median(ordered),
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "max": ordered[-1],
            "mean": statistics.fmean(ordered),
        }


class ReplicaWatch:
    """`kubectl get -w` on one RerankerDeployment (a real API watch); records when each
    spec.replicas value was first seen."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self._process = subprocess.Popen(
            [
                str(cluster.bin_dir / "kubectl"),
                "get",
                "rrd",
                NAME,
                "-n",
                namespace,
                "--watch",
                "-o",
                'jsonpath={.spec.replicas}{"\\n"}',
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=cluster.env(),
            text=True,
        )
        self._lock = threading.Lock()
        self._changes: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            seen = time.time()
            if not line.strip().isdigit():
                continue
            replicas = int(line.strip())
            with self._lock:
                if not self._changes or self._changes[-1][1] != replicas:
                    self._changes.append((seen, replicas))

    def first_seen(self, replicas: int, *, after: float) -> float | None:
        with self._lock:
            for seen, value in self._changes:
                if value == replicas and seen >= after:
                    return seen
        return None

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()


AUTOSCALING: dict[str, Any] = {
    "mode": "builtin",
    "minReplicas": 1,
    "maxReplicas": 4,
    "cooldownSeconds": 0,
    "scaleUp": {"queueDepth": 100000, "p99LatencyMs": 600000, "gpuUtilization": 90},
    "scaleDown": {"gpuUtilization": 1, "forSeconds": 86400},
}


@contextmanager
def _path_setup(
    cluster: LocalCluster, *, path: str, interval: int, for_s: int, workdir: Path
) -> Iterator[tuple[Namespace, PodServers]]:
    token = secrets.token_hex(16)
    with Namespace.create(cluster, f"latency-{path}") as ns:
        cluster.kubectl(
            "create", "secret", "generic", "alert-token", "-n", ns.name,
            f"--from-literal=token={token}",
        )  # fmt: skip
        operator = OperatorProcess(
            cluster,
            namespaces=[ns.name],
            log_path=workdir / f"operator-{path}.log",
            builtin=path == "builtin",
            webhook_secret="alert-token",
        )
        autoscaling = {
            **AUTOSCALING,
            "intervalSeconds": interval,
            "scaleUp": {**AUTOSCALING["scaleUp"], "forSeconds": for_s},
        }
        manifest = reranker(
            NAME, pool=ns.pool, autoscaling=autoscaling, monitoring={"alertWebhook": True}
        )
        monitoring = None
        try:
            operator.wait_ready()
            ns.apply(manifest)
            if path == "webhook":
                monitoring = Monitoring(
                    rules_yaml=operator_rules_yaml(manifest, ns.name),
                    webhook_url=operator.webhook_url,
                    targets_url=operator.targets_url,
                    token=token,
                    workdir=workdir / "monitoring",
                    interval=f"{interval}s",
                )
            with PodServers(
                cluster,
                namespace=ns.name,
                name=NAME,
                workdir=workdir / f"pods-{path}",
                inference=False,
                sidecar_interval=0.25,
            ) as servers:
                wait_until(lambda: len(servers.ready()) == 1, timeout=120, what="sidecar up")
                if monitoring is not None:
                    wait_until(
                        lambda: monitoring is not None and monitoring.targets_up() >= 1,
                        timeout=120,
                        what="Prometheus scraping the sidecar",
                    )
                yield ns, servers
        finally:
            operator.stop()
            if monitoring is not None:
                monitoring.stop()


def _wait_for_replicas(
    watch: ReplicaWatch, replicas: int, *, after: float, timeout: float, what: str
) -> float:
    deadline = time.monotonic() + timeout
    while (seen := watch.first_seen(replicas, after=after)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: replicas never became {replicas}")
        time.sleep(0.05)
    return seen


def run_path(
    cluster: LocalCluster, *, path: str, trials: int, interval: int, for_s: int, workdir: Path
) -> PathResult:
    latencies: list[float] = []
    with _path_setup(cluster, path=path, interval=interval, for_s=for_s, workdir=workdir) as (
        ns,
        servers,
    ):
        watch = ReplicaWatch(cluster, ns.name)
        try:
            time.sleep(2 * interval)
            for trial in range(trials):
                time.sleep(random.uniform(0, interval))
                t0 = time.time()
                servers.set_gpu_defaults(utilization=97)
                written = _wait_for_replicas(
                    watch, 2, after=t0, timeout=for_s + 10 * interval, what=f"{path} trial {trial}"
                )
                latencies.append(written - (t0 + for_s))
                print(f"{path} trial {trial}: {latencies[-1]:.2f} s after `for` expired")
                servers.set_gpu_defaults(utilization=5)
                cluster.kubectl("scale", "rrd", NAME, "-n", ns.name, "--replicas=1")
                wait_until(
                    lambda: len(ns.pods(NAME)) == 1 and len(servers.ready()) == 1,
                    timeout=120,
                    what="back to one pod",
                )
                # Quiet for two intervals: the `for` clock and the alert reset.
                time.sleep(2 * interval + 1)
        finally:
            watch.stop()
    return PathResult(path=path, interval_s=interval, for_s=for_s, trials=latencies)


def _commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    return result.stdout.strip() or "unknown"


def render_section(results: list[PathResult], *, date: str, commit: str, command: str) -> str:
    rows = []
    for r in results:
        s = r.summary
        rows.append(
            f"| {r.path} | {r.interval_s:g} s | {r.for_s:g} s | {len(r.trials)} | "
            f"{s['min']:.2f} s | {s['median']:.2f} s | {s['p90']:.2f} s | {s['max']:.2f} s | "
            f"{'yes' if s['max'] < 2 * r.interval_s else 'no'} |"
        )
    return f"""{SECTION}

`bench/operator_scaling/decision_latency.py`: time from a scale-up threshold's `for` expiring
(t0 + forSeconds, t0 = the moment every fake GPU of the resource reports 97 % against a 90 %
threshold) to the replica change written (the RerankerDeployment's spec.replicas 1 -> 2, as a
watch on the real API server sees it). Real operator, real GPU sidecars (fake NVML backend,
0.25 s polls) on kwok pod IPs; the webhook path adds Debian's Prometheus (scrape and rule
evaluation every interval, HTTP service discovery through the operator) and Alertmanager
(group_wait 0s). Each trial starts at a random phase of the evaluation clock. Target: under two
evaluation intervals.

| path | evaluation interval | forSeconds | trials | min | median | p90 | max | max < 2 intervals |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

The builtin path's latency is the wait for the first evaluation that sees the threshold (0 to 1
interval; evaluations run at a fixed rate and judge `for` on their scheduled times), plus one
scrape and one API write (milliseconds). Because the scheduled time can lag the real scrape by
the loop tick (0.2 s) plus the scrape, a threshold can be judged held that much early: hence
values slightly below zero. The webhook path waits for Prometheus' next scrape and its next rule
evaluation, each up to one interval, then Alertmanager and the webhook (milliseconds).

- Date: {date}. Commit: {commit}. Machine: dev VM, 2 cores shared with other helpers' runs
  ({platform.python_implementation()} {platform.python_version()}).
- Command: `{command}`; raw trials in `bench/operator_scaling/results/decision-latency.json`.
"""


def write_results_md(section: str) -> None:
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    start = text.find(SECTION + "\n")
    if start >= 0:
        following = text.find("\n## ", start + len(SECTION))
        end = len(text) if following < 0 else following + 1
        text = text[:start] + section + ("\n" if following >= 0 else "") + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS_MD.write_text(text)


def _render_saved() -> None:
    saved = json.loads(RESULTS_JSON.read_text())
    results = [
        PathResult(path=r["path"], interval_s=r["interval_s"], for_s=r["for_s"], trials=r["trials"])
        for r in saved["results"]
    ]
    section = render_section(
        results, date=saved["date"], commit=saved["commit"], command=saved["command"]
    )
    write_results_md(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per path")
    parser.add_argument("--interval", type=int, default=5, help="evaluation interval, seconds")
    parser.add_argument("--for-seconds", type=int, default=5, help="scaleUp.forSeconds")
    parser.add_argument("--paths", default="builtin,webhook", help="builtin, webhook or both")
    parser.add_argument("--write-results", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="re-render the RESULTS.md section from the saved JSON; run nothing",
    )
    args = parser.parse_args()
    if args.render_only:
        _render_saved()
        return
    paths = [p for p in args.paths.split(",") if p]
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="kuberank-latency-") as tmp,
        running_cluster() as cluster,
    ):
        install_crd(cluster)
        for path in paths:
            results.append(
                run_path(
                    cluster,
                    path=path,
                    trials=args.trials,
                    interval=args.interval,
                    for_s=args.for_seconds,
                    workdir=Path(tmp),
                )
            )
    command = (
        ".venv/bin/python -m bench.operator_scaling.decision_latency "
        f"--trials {args.trials} --interval {args.interval} --for-seconds {args.for_seconds} "
        "--write-results"
    )
    payload = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": _commit(),
        "command": command,
        "results": [{**asdict(r), "summary": r.summary} for r in results],
    }
    print(json.dumps(payload, indent=2))
    if args.write_results:
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(json.dumps(payload, indent=2) + "\n")
        _render_saved()


if __name__ == "__main__":
    main()
