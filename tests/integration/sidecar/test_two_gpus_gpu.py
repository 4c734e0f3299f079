"""One card per pod, on real GPUs: real inference servers (the benchmark's large shape), each
given its card the way the rendered pod is (the device plugin's `NVIDIA_VISIBLE_DEVICES`, and
`CUDA_VISIBLE_DEVICES` as the NVIDIA container runtime leaves it), each with a real sidecar on
the NVML backend that finds its card through the handshake file its server wrote.

- every sidecar exports exactly its own card: its UUID, the memory NVML reads for that card;
- load on one card only: the other card's sidecar shows it idle, the loaded card's utilization
  and GPM tensor activity rise (needs two GPUs);
- tuning in dry-run mode plans only the sidecar's own card, and two servers on one card (a node
  that handed one GPU to two pods) make it refuse as shared.

On a one-GPU machine the two-card comparisons skip and the rest runs. Figures (what each
sidecar exported, per card, idle and loaded) print with `-s`, for bench/RESULTS.md:

    make test-gpu PYTEST_ARGS="-q -s -k two_gpus"
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.inference.test_memory_pressure_gpu import large_model_dir, wait_ready
from tests.integration.inference.test_shutdown import call, free_port
from tests.integration.sidecar.sidecar_process import get

pytestmark = pytest.mark.gpu

__all__ = ["large_model_dir"]  # the module-scoped fixture, shared with the memory test

SIDECAR = "from kuberank_sidecar.cli import main; raise SystemExit(main())"
SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
WORDS = [
    "the",
    "model",
    "ranks",
    "documents",
    "by",
    "relevance",
    "to",
    "a",
    "query",
    "on",
    "one",
    "card",
    "per",
    "pod",
]


@dataclass(frozen=True)
class Card:
    index: int
    uuid: str


@dataclass(frozen=True)
class Pod:
    """One inference server and its sidecar, as one pod would run them."""

    name: str
    card: Card
    server: str
    sidecar: str
    handshake: Path


def _cards() -> list[Card]:
    import pynvml

    pynvml.nvmlInit()
    try:
        cards = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index))
            cards.append(Card(index, uuid.decode() if isinstance(uuid, bytes) else uuid))
        return cards
    finally:
        pynvml.nvmlShutdown()


def _fb_used_mib(uuid: str) -> float:
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        return float(pynvml.nvmlDeviceGetMemoryInfo(handle).used) / 2**20
    finally:
        pynvml.nvmlShutdown()


@pytest.fixture(scope="module")
def cards() -> list[Card]:
    found = _cards()
    if not found:
        pytest.skip("no GPU visible to NVML")
    return found[:2]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@contextmanager
def _server(model: Path, card: Card, workdir: Path) -> Iterator[tuple[str, Path]]:
    """A server on `card` only, ready; yields its URL and the handshake file it wrote."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    handshake = workdir / "device.json"
    env = {**os.environ, "NVIDIA_VISIBLE_DEVICES": card.uuid, "CUDA_VISIBLE_DEVICES": card.uuid}
    argv = [
        sys.executable, "-m", "kuberank_inference", "--model", str(model), "--device", "cuda",
        "--max-batch-tokens", "16384", "--batches-in-flight", "2",
        "--host", "127.0.0.1", "--port", str(port), "--device-handshake-file", str(handshake),
    ]  # fmt: skip
    log_path = workdir / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(process, base, log_path)
        assert handshake.exists(), log_path.read_text()
        yield base, handshake
    finally:
        _stop(process)


def _sidecar_argv(handshake: Path, pod: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-c", SIDECAR, "--backend", "nvml",
        "--device-handshake-file", str(handshake),
        "--pod-resources-socket", str(handshake.parent / "no-kubelet.sock"),
        "--pod-name", pod, "--pod-namespace", "two-gpus", "--interval", "0.5", *extra,
    ]  # fmt: skip


@contextmanager
def _sidecar(handshake: Path, pod: str, workdir: Path) -> Iterator[str]:
    port = free_port()
    argv = _sidecar_argv(handshake, pod, "--host", "127.0.0.1", "--port", str(port))
    log_path = workdir / "sidecar.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                get(base + "/healthz", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        yield base
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def pods(
    cards: list[Card], large_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Pod]]:
    """One pod per card (at most two), started once for the module."""
    root = tmp_path_factory.mktemp("two-gpus")
    with ExitStack() as stack:
        started = []
        for card in cards:
            name = f"reranker-{card.index}"
            workdir = root / name
            server, handshake = stack.enter_context(_server(large_model_dir, card, workdir))
            sidecar = stack.enter_context(_sidecar(handshake, name, workdir))
            started.append(Pod(name, card, server, sidecar, handshake))
        yield started


def _series(text: str) -> list[tuple[str, dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = dict(LABEL.findall(match["labels"]))
            found.append((match["name"], labels, float(match["value"])))
    return found


def _exported(pod: Pod) -> dict[str, dict[str, float]]:
    """Per UUID the sidecar labels: each DCGM_* series' value."""
    by_uuid: dict[str, dict[str, float]] = {}
    for name, labels, value in _series(get(pod.sidecar + "/metrics")):
        if name.startswith("DCGM_") and "UUID" in labels:
            by_uuid.setdefault(labels["UUID"], {})[name] = value
    return by_uuid


def _wait_sampled(pod: Pod, metric: str) -> dict[str, dict[str, float]]:
    deadline = time.monotonic() + 30
    while True:
        exported = _exported(pod)
        if exported and all(metric in values for values in exported.values()):
            return exported
        assert time.monotonic() < deadline, f"{pod.name}: no {metric} after 30 s: {exported}"
        time.sleep(0.5)


@contextmanager
def _load(pod: Pod, *, clients: int = 8) -> Iterator[list[int]]:
    """Clients sending 50-document reranks to `pod` until the block ends; yields [ok, failed]."""
    stop = threading.Event()
    counts = [0, 0]
    lock = threading.Lock()
    documents = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(60)) for i in range(50)]

    def client() -> None:
        while not stop.is_set():
            status, _ = call(
                pod.server + "/rerank", {"query": "which card", "texts": documents}, timeout=60
            )
            with lock:
                counts[0 if status == 200 else 1] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3.0)  # the sidecars' GPM and utilization windows fill with load
        yield counts
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)


def _report(
    label: str, pods: list[Pod], exported: Mapping[str, Mapping[str, Mapping[str, float]]]
) -> None:
    keys = (
        "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    )  # fmt: skip
    for pod in pods:
        for uuid, values in exported[pod.name].items():
            shown = ", ".join(f"{k.removeprefix('DCGM_FI_')}={values.get(k)}" for k in keys)
            print(
                f"\n[{label}] sidecar of {pod.name} (card {pod.card.index}) exports {uuid}: {shown}"
            )


def test_each_sidecar_exports_only_its_own_card(pods: list[Pod]) -> None:
    with ExitStack() as stack:
        loads = [stack.enter_context(_load(pod)) for pod in pods]
        exported = {pod.name: _wait_sampled(pod, "DCGM_FI_DEV_FB_USED") for pod in pods}
        used = {pod.card.uuid: _fb_used_mib(pod.card.uuid) for pod in pods}
    _report("all loaded", pods, exported)
    for pod, (ok, failed) in zip(pods, loads, strict=True):
        assert ok > 0
        assert failed == 0
        assert set(exported[pod.name]) == {pod.card.uuid}, exported[pod.name]
        reported = exported[pod.name][pod.card.uuid]["DCGM_FI_DEV_FB_USED"]
        # the weights and the CUDA context of this pod's server at least; NVML's own reading
        # of the same card moments later (the allocator's pool moves a little under load)
        assert reported > 1024
        assert abs(reported - used[pod.card.uuid]) < max(2048.0, 0.1 * used[pod.card.uuid])
        assert "DCGM_FI_DEV_GPU_UTIL" in exported[pod.name][pod.card.uuid]


def test_load_on_one_card_leaves_the_other_idle(pods: list[Pod]) -> None:
    if len(pods) < 2:
        pytest.skip("needs two GPUs (nvidia-h200-x2): only one is visible")
    loaded, idle = pods
    time.sleep(2.0)  # the previous test's load has left both windows
    with _load(loaded, clients=16) as (ok, failed):
        time.sleep(2.0)
        exported = {pod.name: _wait_sampled(pod, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE") for pod in pods}
    _report(f"load on card {loaded.card.index} only", pods, exported)
    assert failed == 0
    assert ok > 0
    hot = exported[loaded.name][loaded.card.uuid]
    cold = exported[idle.name][idle.card.uuid]
    assert set(exported[idle.name]) == {idle.card.uuid}
    assert cold["DCGM_FI_DEV_GPU_UTIL"] <= 5
    assert cold["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"] < 0.02
    assert hot["DCGM_FI_DEV_GPU_UTIL"] >= 50
    assert hot["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"] > 10 * max(
        cold["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"], 0.001
    )


def _dry_run(handshake: Path, pod: str, *, power_w: int) -> tuple[int, dict[str, object]]:
    argv = _sidecar_argv(
        handshake, pod, "--dry-run", "--tuning-assume-exclusive",
        "--power-limit-watts", str(power_w),
    )  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, dict(json.loads(done.stdout))


def _mid_power_limit(uuid: str) -> int:
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        low, high = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
        watts: int = (int(low) + int(high)) // 2000
        return watts
    finally:
        pynvml.nvmlShutdown()


def test_dry_run_tuning_plans_only_the_sidecars_own_card(pods: list[Pod]) -> None:
    for pod in pods:
        watts = _mid_power_limit(pod.card.uuid)
        code, report = _dry_run(pod.handshake, pod.name, power_w=watts)
        print(f"\n[dry run] {pod.name}: exit {code}, {json.dumps(report['plans'])}")
        assert report["device_source"] == "handshake"
        assert report["devices"] == [pod.card.uuid]
        plans = report["plans"]
        assert isinstance(plans, list)
        assert [plan["gpu_uuid"] for plan in plans] == [pod.card.uuid]
        # its own server's one CUDA process is not sharing: the plan applies
        assert code == 0, plans
        assert plans[0]["set_power_limit_watts"] == watts


def test_two_servers_on_one_card_make_tuning_refuse_it_as_shared(
    pods: list[Pod], large_model_dir: Path, tmp_path: Path
) -> None:
    # a deliberate misconfiguration: a second pod's server handed the first pod's card
    first = pods[0]
    with _server(large_model_dir, first.card, tmp_path / "intruder") as (_, intruder):
        for handshake, pod in ((first.handshake, first.name), (intruder, "intruder")):
            code, report = _dry_run(handshake, pod, power_w=_mid_power_limit(first.card.uuid))
            print(f"\n[dry run, shared card] {pod}: exit {code}, {json.dumps(report['plans'])}")
            assert code == 3
            plans = report["plans"]
            assert isinstance(plans, list)
            (plan,) = plans
            assert plan["gpu_uuid"] == first.card.uuid
            assert plan["refusal"] == "shared_gpu"
            assert "2 processes hold a CUDA context" in plan["message"]
            assert plan["set_power_limit_watts"] is None
