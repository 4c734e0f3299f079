"""The kuberank Grafana dashboard (dashboards/kuberank.json), built from a few panel helpers so
every panel looks and filters the same way. Pure: returns the dashboard as a dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

UID = "kuberank-overview"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Every query filters on these variables. `rerankerdeployment` is the label kuberank's
# PodMonitors add; the ".*" of "All" also matches series without it (plain Prometheus).
SEL = 'namespace=~"$namespace", rerankerdeployment=~"$rerankerdeployment", pod=~"$pod"'
# The operator's per-resource series have no inference pod to select.
RRD_SEL = 'namespace=~"$namespace", rerankerdeployment=~"$rerankerdeployment"'
RATE = "$__rate_interval"
# Engine activity: GPM's DCGM_FI_PROF_GR_ENGINE_ACTIVE (Hopper and newer, per MIG slice too), else
# NVML utilization, which reads near 100 % whenever any kernel runs.
ENGINE_ACTIVE = f"(DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{SEL}}} or DCGM_FI_DEV_GPU_UTIL{{{SEL}}} / 100)"


@dataclass(frozen=True)
class Target:
    """One PromQL query and its legend."""

    expr: str
    legend: str


@dataclass
class Layout:
    """Places panels left to right, 24 grid units a row; rows advance the cursor."""

    y: int = 0
    x: int = 0
    row_height: int = 0
    next_id: int = 1
    panels: list[dict[str, Any]] = field(default_factory=list)

    def _take_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._take_id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        self.y += self.row_height
        self.x, self.row_height = 0, 0

    def add(self, panel: dict[str, Any], *, width: int, height: int) -> None:
        if self.x + width > 24:
            self._newline()
        panel["id"] = self._take_id()
        panel["gridPos"] = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)


def _targets(targets: list[Target]) -> list[dict[str, Any]]:
    return [
        {
            "datasource": DATASOURCE,
            "expr": t.expr,
            "legendFormat": t.legend,
            "refId": chr(ord("A") + i),
        }
        for i, t in enumerate(targets)
    ]


def timeseries(
    title: str,
    description: str,
    targets: list[Target],
    *,
    unit: str,
    max_value: float | None = None,
    thresholds: list[tuple[float, str]] | None = None,
) -> dict[str, Any]:
    """A line chart; dashed series are limits (names ending in 'limit' or 'margin')."""
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"},
    }
    if max_value is not None:
        defaults["max"] = max_value
        defaults["min"] = 0
    if thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}]
            + [{"color": c, "value": v} for v, c in thresholds],
        }
        defaults["custom"]["thresholdsStyle"] = {"mode": "dashed"}
    overrides = [
        {
            "matcher": {"id": "byRegexp", "options": ".*(limit|margin|locked).*"},
            "properties": [
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                {"id": "custom.fillOpacity", "value": 0},
            ],
        }
    ]
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": _targets(targets),
    }


def stat(title: str, description: str, target: Target, *, unit: str) -> dict[str, Any]:
    """A single number with a sparkline."""
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"graphMode": "area", "reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": _targets([target]),
    }


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def _overview(layout: Layout) -> None:
    layout.row("Overview")
    for title, description, expr, unit in (
        (
            "Ready replicas",
            "Inference pods reporting ready.",
            f"sum(kuberank_inference_ready{{{SEL}}})",
            "none",
        ),
        (
            "Pairs/s",
            "Query-document pairs scored per second, all pods.",
            f"sum(rate(kuberank_inference_pairs_total{{{SEL}}}[{RATE}]))",
            "short",
        ),
        (
            "p99 latency",
            "99th percentile request latency, all endpoints.",
            "histogram_quantile(0.99, sum by (le) (rate("
            f"kuberank_inference_request_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
            "s",
        ),
        (
            "Queue depth",
            "Pairs waiting for a batch, all pods.",
            f"sum(kuberank_inference_queue_depth{{{SEL}}})",
            "short",
        ),
        (
            "CUDA OOMs (1h)",
            "CUDA out-of-memory errors in the last hour.",
            f"sum(increase(kuberank_cuda_oom_total{{{SEL}}}[1h]))",
            "none",
        ),
        (
            "GPU engine active",
            "Mean share of time the pods' GPUs (or MIG slices) were busy: "
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE, else DCGM_FI_DEV_GPU_UTIL.",
            f"avg({ENGINE_ACTIVE})",
            "percentunit",
        ),
    ):
        layout.add(stat(title, description, Target(expr, ""), unit=unit), width=4, height=4)


def _quantile(q: float, by: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, {by}) (rate("
        f"kuberank_inference_request_duration_seconds_bucket{{{SEL}}}[{RATE}])))"
    )


def _serving(layout: Layout) -> None:
    layout.row("Serving")
    layout.add(
        timeseries(
            "Request latency p50 / p99",
            "Latency of inference requests by endpoint, from the server's histogram.",
            [
                Target(_quantile(0.5, "endpoint"), "p50 {{endpoint}}"),
                Target(_quantile(0.99, "endpoint"), "p99 {{endpoint}}"),
            ],
            unit="s",
        ),
        width=12,
        height=8,
    )
    layout.add(
        timeseries(
            "Pairs/s",
            "Query-document pairs (or texts, for embedding models) scored per second, by pod, "
            "beside what each pod's start-up calibration measured the model alone doing at its "
            "chosen batching setting (no HTTP): the gap is the headroom or the host path's cost.",
            [
                Target(
                    f"sum by (pod) (rate(kuberank_inference_pairs_total{{{SEL}}}[{RATE}]))",
                    "{{pod}}",
                ),
                Target(
                    f"max by (pod) (kuberank_inference_calibrated_pairs_per_second{{{SEL}}})",
                    "calibrated {{pod}}",
                ),
            ],
            unit="short",
        ),
        width=12,
        height=8,
    )
    layout.add(
        timeseries(
            "Queue depth and pairs in flight",
            "Pairs waiting for a batch (queue) and pairs in the batch on the GPU (in flight). A "
            "queue that keeps growing means the replicas cannot keep up: the autoscaler adds pods.",
            [
                Target(f"sum by (pod) (kuberank_inference_queue_depth{{{SEL}}})", "queue {{pod}}"),
                Target(
                    f"sum by (pod) (kuberank_inference_pairs_in_flight{{{SEL}}})",
                    "in flight {{pod}}",
                ),
            ],
            unit="short",
        ),
        width=8,
        height=8,
    )
    layout.add(
        timeseries(
            "Tokens waiting and running",
            "Real tokens waiting for a batch (queue) and in batches on the GPU (running): the "
            "work in the unit batches are planned by, so long documents count for what they "
            "cost; spec.autoscaling.scaleUp.queueTokens scales on the queue.",
            [
                Target(f"sum by (pod) (kuberank_inference_queue_tokens{{{SEL}}})", "queue {{pod}}"),
                Target(
                    f"sum by (pod) (kuberank_inference_running_tokens{{{SEL}}})",
                    "running {{pod}}",
                ),
            ],
            unit="short",
        ),
        width=8,
        height=8,
    )
    layout.add(
        timeseries(
            "Requests/s by status",
            "HTTP answers per second by status code: 429 means overloaded, 424 inference failure, "
            "503 not ready.",
            [
                Target(
                    f"sum by (status) (rate(kuberank_inference_requests_total{{{SEL}}}[{RATE}]))",
                    "{{status}}",
                )
            ],
            unit="reqps",
        ),
        width=8,
        height=8,
    )
    layout.add(
        timeseries(
            "CUDA out-of-memory errors and token budget",
            "CUDA OOMs per pod (bars of the increase) and the batch token budget in force; the "
            "operator restarts a pod whose OOMs cross spec.oom.maxEvents within the window.",
            [
                Target(
                    f"sum by (pod) (increase(kuberank_cuda_oom_total{{{SEL}}}[{RATE}]))",
                    "OOMs {{pod}}",
                ),
                Target(
                    f"max by (pod) (kuberank_inference_token_budget{{{SEL}}})", "budget {{pod}}"
                ),
            ],
            unit="short",
        ),
        width=8,
        height=8,
    )


def _gpu(layout: Layout) -> None:
    layout.row("GPU")
    layout.add(
        timeseries(
            "GPU activity",
            "Graphics-engine, SM and tensor-pipe activity from NVML GPM (Hopper and newer, per "
            "MIG slice too); the engine line falls back to DCGM_FI_DEV_GPU_UTIL / 100 where "
            "there is no GPM. An engine near 1 with low SM or tensor activity runs small or fp32 "
            "kernels.",
            [
                Target(ENGINE_ACTIVE, "engine {{pod}} gpu {{gpu}} {{GPU_I_ID}}"),
                Target(f"DCGM_FI_PROF_SM_ACTIVE{{{SEL}}}", "SM {{pod}} gpu {{gpu}} {{GPU_I_ID}}"),
                Target(
                    f"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{SEL}}}",
                    "tensor {{pod}} gpu {{gpu}} {{GPU_I_ID}}",
                ),
            ],
            unit="percentunit",
            max_value=1,
        ),
        width=12,
        height=8,
    )
    used = (
        f"(DCGM_FI_DEV_FB_USED{{{SEL}}} + DCGM_FI_DEV_FB_RESERVED{{{SEL}}}) / "
        f"(DCGM_FI_DEV_FB_USED{{{SEL}}} + DCGM_FI_DEV_FB_FREE{{{SEL}}} "
        f"+ DCGM_FI_DEV_FB_RESERVED{{{SEL}}})"
    )
    layout.add(
        timeseries(
            "VRAM used against the safety margin",
            "Share of the device's memory in use; the dashed line is 1 − the VRAM safety margin "
            "(spec.gpu.vramSafetyMargin). Above it the pod risks CUDA out-of-memory errors.",
            [
                Target(used, "used {{pod}}"),
                Target(
                    f"1 - kuberank_gpu_vram_safety_margin_ratio{{{SEL}}}", "margin limit {{pod}}"
                ),
            ],
            unit="percentunit",
            max_value=1,
        ),
        width=12,
        height=8,
    )
    layout.add(
        timeseries(
            "SM occupancy and DRAM activity",
            "Resident warps per SM against the maximum (DCGM_FI_PROF_SM_OCCUPANCY) and the share "
            "of cycles device memory was busy (DCGM_FI_PROF_DRAM_ACTIVE), from NVML GPM.",
            [
                Target(f"DCGM_FI_PROF_SM_OCCUPANCY{{{SEL}}}", "occupancy {{pod}} gpu {{gpu}}"),
                Target(f"DCGM_FI_PROF_DRAM_ACTIVE{{{SEL}}}", "DRAM {{pod}} gpu {{gpu}}"),
            ],
            unit="percentunit",
            max_value=1,
        ),
        width=12,
        height=8,
    )
    layout.add(
        timeseries(
            "PCIe throughput",
            "Bytes per second over PCIe, host to GPU (RX) and GPU to host (TX), from NVML GPM: "
            "tokenized batches going in and scores coming out.",
            [
                Target(f"DCGM_FI_PROF_PCIE_RX_BYTES{{{SEL}}}", "RX {{pod}} gpu {{gpu}}"),
                Target(f"DCGM_FI_PROF_PCIE_TX_BYTES{{{SEL}}}", "TX {{pod}} gpu {{gpu}}"),
            ],
            unit="Bps",
        ),
        width=12,
        height=8,
    )
    layout.add(
        timeseries(
            "Power against the limit",
            "Power draw and the power limit the GPU enforces (spec.gpu.powerLimitWatts when "
            "tuning is applied); the top of the accepted range for scale.",
            [
                Target(f"DCGM_FI_DEV_POWER_USAGE{{{SEL}}}", "draw {{pod}} gpu {{gpu}}"),
                Target(f"kuberank_gpu_power_limit_watts{{{SEL}}}", "limit {{pod}} gpu {{gpu}}"),
                Target(
                    f"kuberank_gpu_power_limit_max_watts{{{SEL}}}", "max limit {{pod}} gpu {{gpu}}"
                ),
            ],
            unit="watt",
        ),
        width=8,
        height=8,
    )
    layout.add(
        timeseries(
            "Clocks",
            "SM and memory clocks, and the range the sidecar locked them to "
            "(spec.gpu.lockedClocks) when it did.",
            [
                Target(f"DCGM_FI_DEV_SM_CLOCK{{{SEL}}}", "SM {{pod}} gpu {{gpu}}"),
                Target(f"DCGM_FI_DEV_MEM_CLOCK{{{SEL}}}", "memory {{pod}} gpu {{gpu}}"),
                Target(
                    f"kuberank_gpu_locked_clock_max_mhz{{{SEL}}}", "locked max {{clock}} {{pod}}"
                ),
                Target(
                    f"kuberank_gpu_locked_clock_min_mhz{{{SEL}}}", "locked min {{clock}} {{pod}}"
                ),
            ],
            unit="rotmhz",
        ),
        width=8,
        height=8,
    )
    layout.add(
        timeseries(
            "Clock-event reasons",
            "GPUs whose clocks are held down, by NVML clock-event reason (sw_power_cap: the "
            "power limit; *_thermal_slowdown: heat; hw_slowdown: power brake or heat).",
            [
                Target(
                    "sum by (reason) (kuberank_gpu_clock_event_active"
                    f'{{{SEL}, reason!="gpu_idle"}})',
                    "{{reason}}",
                )
            ],
            unit="short",
        ),
        width=8,
        height=8,
    )
    layout.add(
        timeseries(
            "Temperature",
            "GPU and memory temperature.",
            [
                Target(f"DCGM_FI_DEV_GPU_TEMP{{{SEL}}}", "GPU {{pod}} gpu {{gpu}}"),
                Target(f"DCGM_FI_DEV_MEMORY_TEMP{{{SEL}}}", "memory {{pod}} gpu {{gpu}}"),
            ],
            unit="celsius",
        ),
        width=12,
        height=8,
    )
    layout.add(
        timeseries(
            "XID errors",
            "XID critical errors by code (increase per interval), and whether each device still "
            "answers NVML (0: lost or failing).",
            [
                Target(
                    f"sum by (pod, xid) (increase(kuberank_gpu_xid_events_total{{{SEL}}}[{RATE}]))",
                    "xid {{xid}} {{pod}}",
                ),
                Target(f"min by (pod) (kuberank_gpu_available{{{SEL}}})", "available {{pod}}"),
            ],
            unit="short",
        ),
        width=12,
        height=8,
    )


def _replicas(layout: Layout) -> None:
    layout.row("Replicas")
    layout.add(
        timeseries(
            "Ready replicas",
            "Inference pods reporting ready, by namespace; the operator scales between "
            "spec.autoscaling.minReplicas and maxReplicas (see `kubectl get rrd`).",
            [Target(f"sum by (namespace) (kuberank_inference_ready{{{SEL}}})", "{{namespace}}")],
            unit="none",
        ),
        width=12,
        height=8,
    )
    state = "kuberank_operator_rerankerdeployment"
    layout.add(
        timeseries(
            "Desired, ready and available replicas",
            "From the operator's state metrics (no kube-state-metrics needed): spec.replicas as "
            "the autoscaler set it, pods reporting ready, and pods its Deployment counts as "
            "available.",
            [
                Target(f"sum by (rerankerdeployment) ({state}_{name}{{{RRD_SEL}}})", legend)
                for name, legend in (
                    ("spec_replicas", "desired {{rerankerdeployment}}"),
                    ("status_replicas_ready", "ready {{rerankerdeployment}}"),
                    ("status_replicas_available", "available {{rerankerdeployment}}"),
                )
            ],
            unit="none",
        ),
        width=12,
        height=8,
    )


def build_dashboard() -> dict[str, Any]:
    """The whole dashboard."""
    layout = Layout()
    _overview(layout)
    _serving(layout)
    _gpu(layout)
    _replicas(layout)
    return {
        "uid": UID,
        "title": "kuberank",
        "description": "kuberank reranker and embedding pods: serving, GPU telemetry, replicas.",
        "tags": ["kuberank", "gpu", "nvidia", "reranker"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "links": [],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                _variable(
                    "namespace", "Namespace", "label_values(kuberank_inference_ready, namespace)"
                ),
                _variable(
                    "rerankerdeployment",
                    "RerankerDeployment",
                    'label_values(kuberank_inference_ready{namespace=~"$namespace"}, '
                    "rerankerdeployment)",
                ),
                _variable(
                    "pod",
                    "Pod",
                    'label_values(kuberank_inference_ready{namespace=~"$namespace", '
                    'rerankerdeployment=~"$rerankerdeployment"}, pod)',
                ),
            ]
        },
        "panels": layout.panels,
    }
