"""How many CPUs this container may use: its cgroup CPU quota (v2 `cpu.max`, or v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`), else the CPUs it is pinned to (sched_getaffinity),
else the host's count. A pod with `limits.cpu: 4` on a 128-core node gets 4, not 128.

Pure but for `read_cpu_budget`, which reads the real files; `cpu_budget` takes their contents."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
MAX_TOKENIZATION_WORKERS = 8  # more threads gave no more throughput on the benchmark's host


def quota_cpus_v2(cpu_max: str) -> float | None:
    """CPUs from cgroup v2 `cpu.max` ("QUOTA PERIOD", QUOTA "max" when unlimited)."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def quota_cpus_v1(quota_us: str, period_us: str) -> float | None:
    """CPUs from cgroup v1 `cpu.cfs_quota_us` (-1 when unlimited) and `cpu.cfs_period_us`."""
    try:
        quota, period = int(quota_us.strip()), int(period_us.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_budget(
    *,
    read: Callable[[Path], str | None],
    affinity: int | None,
    host_cpus: int | None,
    root: Path = CGROUP,
) -> int:
    """Whole CPUs this process may use (at least 1): the quota rounded up, no more than the
    CPUs it may run on. `read` gives a file's text or None when it is missing."""
    quota: float | None = None
    v2 = read(root / "cpu.max")
    if v2 is not None:
        quota = quota_cpus_v2(v2)
    else:
        for folder in (root / "cpu", root / "cpu,cpuacct", root):
            quota_us = read(folder / "cpu.cfs_quota_us")
            period_us = read(folder / "cpu.cfs_period_us")
            if quota_us is not None and period_us is not None:
                quota = quota_cpus_v1(quota_us, period_us)
                break
    usable = affinity or host_cpus or 1
    if quota is None:
        return max(1, usable)
    return max(1, min(usable, math.ceil(quota - 1e-9)))


def default_tokenization_workers(cpus: int) -> int:
    """Tokenizer workers for `cpus` CPUs: one per CPU, up to MAX_TOKENIZATION_WORKERS."""
    return max(1, min(MAX_TOKENIZATION_WORKERS, cpus))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None


def _affinity() -> int | None:
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return None
    try:
        return len(getter(0))
    except OSError:
        return None


def read_cpu_budget() -> int:
    """The CPUs this container may use, read from its cgroup and affinity."""
    return cpu_budget(read=_read_text, affinity=_affinity(), host_cpus=os.cpu_count())
