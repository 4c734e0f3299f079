"""Tokenizer threads default from the container's CPU quota: cgroup v2 cpu.max, cgroup v1
cfs_quota_us/cfs_period_us, then the CPUs the process may run on; fake cgroup files only."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuberank_inference.app import engine_settings
from kuberank_inference.config import parse_config
from kuberank_inference.cpuquota import (
    cpu_budget,
    default_tokenization_workers,
    quota_cpus_v1,
    quota_cpus_v2,
)

ROOT = Path("/sys/fs/cgroup")


def files(contents: dict[str, str]) -> object:
    def read(path: Path) -> str | None:
        return contents.get(str(path.relative_to(ROOT)))

    return read


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("400000 100000\n", 4.0),
        ("150000 100000", 1.5),
        ("max 100000\n", None),
        ("", None),
        ("x 100000", None),
        ("0 100000", None),
    ],
)
def test_cgroup_v2_cpu_max(text: str, cpus: float | None) -> None:
    assert quota_cpus_v2(text) == cpus


def test_cgroup_v1_quota_and_period() -> None:
    assert quota_cpus_v1("200000\n", "100000\n") == 2.0
    assert quota_cpus_v1("-1\n", "100000\n") is None


def test_a_v2_quota_rounds_up_and_caps_the_cpus_the_host_has() -> None:
    read = files({"cpu.max": "250000 100000\n"})
    assert cpu_budget(read=read, affinity=128, host_cpus=128) == 3  # type: ignore[arg-type]


def test_no_quota_falls_back_to_the_affinity_then_the_host() -> None:
    read = files({"cpu.max": "max 100000\n"})
    assert cpu_budget(read=read, affinity=6, host_cpus=128) == 6  # type: ignore[arg-type]
    nothing = files({})
    assert cpu_budget(read=nothing, affinity=None, host_cpus=12) == 12  # type: ignore[arg-type]
    assert cpu_budget(read=nothing, affinity=None, host_cpus=None) == 1  # type: ignore[arg-type]


def test_a_quota_above_the_affinity_is_capped_by_it() -> None:
    read = files({"cpu.max": "1600000 100000"})
    assert cpu_budget(read=read, affinity=2, host_cpus=64) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize("folder", ["cpu", "cpu,cpuacct", ""])
def test_cgroup_v1_in_each_usual_place(folder: str) -> None:
    prefix = f"{folder}/" if folder else ""
    read = files({f"{prefix}cpu.cfs_quota_us": "50000\n", f"{prefix}cpu.cfs_period_us": "100000\n"})
    assert cpu_budget(read=read, affinity=32, host_cpus=32) == 1  # type: ignore[arg-type]


def test_tokenizer_threads_follow_the_quota_up_to_eight() -> None:
    assert [default_tokenization_workers(n) for n in (1, 3, 8, 64)] == [1, 3, 8, 8]
    config = parse_config([], environ={})
    assert config.tokenization_workers == 0
    assert engine_settings(config, cpus=3).tokenization_workers == 3
    explicit = parse_config(["--tokenization-workers", "5"], environ={})
    assert engine_settings(explicit, cpus=3).tokenization_workers == 5
