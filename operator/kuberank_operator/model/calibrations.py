"""What each pod runs at since start-up (its calibration's choice, read from its /metrics), and
the status.calibration summary of a RerankerDeployment: one entry per GPU model and setting,
with how many pods run it and the median of the pairs/s they measured. Pure."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kuberank_operator.model.signals import PodCalibration, PodScrape

UNKNOWN_GPU = "unknown"


@dataclass(frozen=True)
class PodSetting:
    """One pod's setting and the GPU model it runs on."""

    gpu_model: str
    calibration: PodCalibration


def gpu_model(scrape: PodScrape) -> str:
    """The sidecar's modelName (the same name dcgm-exporter and NVML give), else the inference
    server's own device name (torch's; cpu on CPU)."""
    if scrape.gpu is not None and scrape.gpu.model_name:
        return scrape.gpu.model_name
    if scrape.inference is not None and scrape.inference.calibration is not None:
        return scrape.inference.calibration.device_name or UNKNOWN_GPU
    return UNKNOWN_GPU


def pod_settings(
    scrapes: Iterable[PodScrape], *, known: Mapping[str, PodSetting], pods: Iterable[str]
) -> dict[str, PodSetting]:
    """Each current pod's setting: from this scrape where it answered, else as last seen (a
    failed scrape does not make a pod's setting vanish); pods that are gone are dropped."""
    current = set(pods)
    settings = {pod: setting for pod, setting in known.items() if pod in current}
    for scrape in scrapes:
        if scrape.pod not in current or scrape.inference is None:
            continue
        calibration = scrape.inference.calibration
        if calibration is not None:
            settings[scrape.pod] = PodSetting(gpu_model(scrape), calibration)
    return settings


def calibration_status(settings: Iterable[PodSetting]) -> list[dict[str, Any]]:
    """status.calibration: pods grouped by GPU model, state and setting, in a stable order."""
    groups: dict[tuple[str, str, int, int], list[float | None]] = {}
    for setting in settings:
        c = setting.calibration
        key = (setting.gpu_model, c.state, c.max_batch_tokens, c.batches_in_flight)
        groups.setdefault(key, []).append(c.pairs_per_second)
    entries: list[dict[str, Any]] = []
    for (model, state, tokens, depth), rates in sorted(groups.items()):
        entry: dict[str, Any] = {
            "gpuModel": model,
            "state": state,
            "maxBatchTokens": tokens,
            "batchesInFlight": depth,
            "pods": len(rates),
        }
        measured = [rate for rate in rates if rate is not None]
        if measured:
            entry["pairsPerSecond"] = round(statistics.median(measured), 1)
        entries.append(entry)
    return entries
