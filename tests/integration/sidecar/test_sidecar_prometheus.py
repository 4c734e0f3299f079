"""Done-when: a real Prometheus scrapes the real sidecar on a fake 8-GPU host and answers
dcgm-exporter dashboard queries with the values of the fake profile."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from kuberank_sidecar.fake_gpm import FULL_LOAD
from kuberank_sidecar.fake_nvml import PROFILES, fake_uuid
from tests.integration.sidecar.sidecar_process import free_port, get, running_sidecar

pytestmark = pytest.mark.prometheus
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
HOST = "node-prom-1"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(Prometheus base URL, state file) with Prometheus scraping a sidecar every second."""
    if not Path(PROMETHEUS).exists():
        pytest.skip("Debian's prometheus is not installed (make system-deps)")
    state = tmp_path / "state.json"
    args = [
        "--backend", "fake", "--fake-profile", "h100x8", "--devices", "all",
        "--fake-state-file", str(state), "--interval", "0.5", "--hostname", HOST,
        "--pod-name", "rr-0", "--pod-namespace", "search",
        "--tuning-journal", str(tmp_path / "journal.json"),
    ]  # fmt: skip
    with running_sidecar(args, log=tmp_path / "sidecar.log") as (_proc, sidecar):
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "sidecar",
                            "static_configs": [{"targets": [sidecar.removeprefix("http://")]}],
                        }
                    ],
                }
            )
        )
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}", state
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()


def _query(base: str, promql: str) -> list[dict[str, object]]:
    reply = json.loads(get(f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"))
    assert reply["status"] == "success", reply
    return list(reply["data"]["result"])


def _wait_for(base: str, promql: str, predicate, timeout: float = 60.0) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        try:
            last = _query(base, promql)
            if predicate(last):
                return last
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{promql} never matched; last answer: {last}")


def _value(series: dict[str, object]) -> float:
    return float(series["value"][1])  # type: ignore[index]


def test_dcgm_dashboard_queries_answer_with_the_profile_values(
    prometheus: tuple[str, Path],
) -> None:
    base, state = prometheus
    specs = PROFILES["h100x8"].gpus
    util = _wait_for(base, "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)", lambda r: len(r) == 1)
    assert util[0]["metric"] == {"Hostname": HOST}
    assert _value(util[0]) == pytest.approx(sum(s.utilization for s in specs) / len(specs))

    ratio = _query(base, "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)")
    got = {int(r["metric"]["gpu"]): _value(r) for r in ratio}  # type: ignore[index]
    assert got == {
        i: pytest.approx(s.fb_used_mib / (s.fb_total_mib - s.fb_reserved_mib))
        for i, s in enumerate(specs)
    }
    power = _query(base, 'sum by (Hostname) (DCGM_FI_DEV_POWER_USAGE{pod="rr-0"})')
    assert _value(power[0]) == pytest.approx(sum(s.power_w for s in specs))
    temps = _query(base, "max by (modelName) (DCGM_FI_DEV_GPU_TEMP)")
    assert temps[0]["metric"] == {"modelName": "NVIDIA H100 80GB HBM3"}
    assert _value(temps[0]) == max(s.temperature for s in specs)

    # The fake state file drives the real pipeline: load on GPU 0, an XID on GPU 4.
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps({"gpus": {"0": {"utilization": 100}, "4": {"xid_events": [79]}}}))
    tmp.replace(state)
    expected = (100 + sum(s.utilization for s in specs[1:])) / len(specs)
    _wait_for(
        base,
        "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)",
        lambda r: len(r) == 1 and _value(r[0]) == pytest.approx(expected),
    )
    xid = _wait_for(base, "DCGM_FI_DEV_XID_ERRORS > 0", lambda r: len(r) == 1)
    assert xid[0]["metric"]["gpu"] == "4"  # type: ignore[index]
    assert _value(xid[0]) == 79

    # GPM: profiling metrics follow the same load (GPU 0's load is its utilization, 100 %), and
    # the dashboard's fallback expression prefers them over DCGM_FI_DEV_GPU_UTIL.
    tensor = _wait_for(
        base,
        'DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{gpu="0"}',
        lambda r: len(r) == 1 and _value(r[0]) == pytest.approx(FULL_LOAD["tensor_active"][1]),
    )
    assert tensor[0]["metric"]["UUID"] == fake_uuid("h100x8", 0)  # type: ignore[index]
    engine = _query(base, "DCGM_FI_PROF_GR_ENGINE_ACTIVE or DCGM_FI_DEV_GPU_UTIL / 100")
    by_gpu = {r["metric"]["gpu"]: _value(r) for r in engine}  # type: ignore[index]
    assert by_gpu == {
        str(i): pytest.approx((100 if i == 0 else s.utilization) / 100) for i, s in enumerate(specs)
    }
