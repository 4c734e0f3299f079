"""status.calibration from the pods' /metrics: the calibration series parsed from a real
server's exposition shape, the GPU model from the sidecar, and the summary per GPU model."""

from __future__ import annotations

from kuberank_operator.model.calibrations import (
    PodSetting,
    calibration_status,
    gpu_model,
    pod_settings,
)
from kuberank_operator.model.signals import (
    PodCalibration,
    PodScrape,
    parse_inference_metrics,
    parse_sidecar_metrics,
)

INFERENCE = """\
# TYPE kuberank_inference_token_budget_ceiling gauge
kuberank_inference_token_budget_ceiling 16384.0
# TYPE kuberank_inference_calibrated_max_batch_tokens gauge
kuberank_inference_calibrated_max_batch_tokens 16384.0
# TYPE kuberank_inference_calibrated_batches_in_flight gauge
kuberank_inference_calibrated_batches_in_flight 2.0
# TYPE kuberank_inference_calibrated_pairs_per_second gauge
kuberank_inference_calibrated_pairs_per_second {rate}
# TYPE kuberank_inference_calibration_pairs_per_second gauge
kuberank_inference_calibration_pairs_per_second{{batches_in_flight="1",\
max_batch_tokens="8192"}} 1401
# TYPE kuberank_inference_calibration_info gauge
kuberank_inference_calibration_info{{device_name="NVIDIA H200",state="calibrated"}} 1.0
"""
SIDECAR = (
    "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
    'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-1",modelName="NVIDIA H200 NVL"} 40\n'
)


def scrape(pod: str, *, rate: float = 2771.0, sidecar: str | None = SIDECAR) -> PodScrape:
    return PodScrape(
        pod=pod,
        taken_at=0.0,
        inference=parse_inference_metrics(INFERENCE.format(rate=rate)),
        gpu=parse_sidecar_metrics(sidecar) if sidecar is not None else None,
    )


def test_the_calibration_series_are_parsed() -> None:
    reading = parse_inference_metrics(INFERENCE.format(rate=2771.0))
    assert reading.token_budget_ceiling == 16384
    assert reading.calibration == PodCalibration(
        max_batch_tokens=16384,
        batches_in_flight=2,
        state="calibrated",
        device_name="NVIDIA H200",
        pairs_per_second=2771.0,
    )
    assert parse_inference_metrics("kuberank_inference_ready 1\n").calibration is None


def test_the_gpu_model_is_the_sidecars_else_the_servers() -> None:
    assert gpu_model(scrape("a")) == "NVIDIA H200 NVL"
    assert gpu_model(scrape("a", sidecar=None)) == "NVIDIA H200"
    assert parse_sidecar_metrics('DCGM_FI_DEV_GPU_UTIL{gpu="0"} 1\n').model_name is None


def test_pods_are_grouped_per_gpu_model_and_setting_with_the_median_rate() -> None:
    settings = pod_settings(
        [scrape("a", rate=2700.0), scrape("b", rate=2800.0), scrape("c", rate=2790.0)],
        known={},
        pods=["a", "b", "c"],
    )
    other = PodSetting("NVIDIA A10G", PodCalibration(8192, 1, "off", "NVIDIA A10G"))
    assert calibration_status([*settings.values(), other]) == [
        {
            "gpuModel": "NVIDIA A10G",
            "state": "off",
            "maxBatchTokens": 8192,
            "batchesInFlight": 1,
            "pods": 1,
        },
        {
            "gpuModel": "NVIDIA H200 NVL",
            "state": "calibrated",
            "maxBatchTokens": 16384,
            "batchesInFlight": 2,
            "pods": 3,
            "pairsPerSecond": 2790.0,
        },
    ]


def test_a_failed_scrape_keeps_the_last_setting_and_a_gone_pod_drops_out() -> None:
    first = pod_settings([scrape("a"), scrape("b")], known={}, pods=["a", "b"])
    failed = PodScrape(pod="a", taken_at=1.0, inference=None, gpu=None)
    second = pod_settings([failed], known=first, pods=["a"])
    assert set(second) == {"a"}
    assert second["a"] == first["a"]
    assert calibration_status([]) == []
