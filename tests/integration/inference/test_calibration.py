"""The start-up calibration wired into the real app on CPU, with real (small) models: switched
on by flag with a small grid it measures, chooses, runs the engine at the choice and reports it
in /info and /metrics; off by default on CPU; explicit flags fix their axis."""

from __future__ import annotations

from typing import Any

from kuberank_operator.model.signals import parse_inference_metrics
from tests.integration.inference.conftest import Serve

SMALL_GRID = (
    "--calibration",
    "on",
    "--calibration-budgets",
    "1024,2048",
    "--calibration-batches-in-flight",
    "1,2",
    "--calibration-seconds",
    "2",
)


async def test_a_cross_encoder_calibrates_on_cpu_when_asked(
    serve: Serve, cross_runner: Any
) -> None:
    client = await serve(cross_runner, *SMALL_GRID)
    info = await (await client.get("/info")).json()
    calibration = info["calibration"]
    assert calibration["state"] == "calibrated", calibration
    assert calibration["device_name"] == "cpu"
    settings = [(p["max_batch_tokens"], p["batches_in_flight"]) for p in calibration["curve"]]
    assert settings == [(1024, 1), (1024, 2), (2048, 1), (2048, 2)]
    chosen = (calibration["max_batch_tokens"], calibration["batches_in_flight"])
    assert chosen in settings
    assert info["max_batch_tokens"] == chosen[0]
    assert info["batches_in_flight"] == chosen[1]
    assert info["token_budget"] == chosen[0]
    assert calibration["pairs_per_second"] > 0
    text = await (await client.get("/metrics")).text()
    assert f"kuberank_inference_calibrated_max_batch_tokens {float(chosen[0])}" in text
    assert f"kuberank_inference_calibrated_batches_in_flight {float(chosen[1])}" in text
    assert 'kuberank_inference_calibration_info{device_name="cpu",state="calibrated"} 1.0' in text
    assert 'kuberank_inference_calibration_pairs_per_second{batches_in_flight="1"' in text
    assert parse_inference_metrics(text) is not None
    response = await client.post("/rerank", json={"query": "a b", "texts": ["c d", "a b e"]})
    assert response.status == 200


async def test_an_embedding_model_calibrates_too(serve: Serve, minilm_runner: Any) -> None:
    client = await serve(minilm_runner, *SMALL_GRID, "--batches-in-flight", "2")
    calibration = (await (await client.get("/info")).json())["calibration"]
    assert calibration["state"] == "calibrated"
    assert {p["batches_in_flight"] for p in calibration["curve"]} == {2}


async def test_calibration_is_off_by_default_on_cpu(serve: Serve, cross_runner: Any) -> None:
    client = await serve(cross_runner, "--max-batch-tokens", "4096")
    info = await (await client.get("/info")).json()
    assert info["calibration"]["state"] == "off"
    assert info["calibration"]["curve"] == []
    assert info["token_budget"] == 4096
    text = await (await client.get("/metrics")).text()
    assert "kuberank_inference_calibrated_max_batch_tokens 4096.0" in text
    assert 'state="off"' in text
    assert "\nkuberank_inference_calibrated_pairs_per_second " not in text


async def test_both_axes_given_leave_nothing_to_calibrate(serve: Serve, cross_runner: Any) -> None:
    client = await serve(
        cross_runner, *SMALL_GRID, "--max-batch-tokens", "3000", "--batches-in-flight", "3"
    )
    info = await (await client.get("/info")).json()
    assert info["calibration"]["state"] == "fixed"
    assert (info["max_batch_tokens"], info["batches_in_flight"]) == (3000, 3)
