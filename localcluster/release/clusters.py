"""A handle on a running local cluster, whether started by this process or by `make cluster-up`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from localcluster.cluster import ClusterCommandError
from localcluster.layout import ClusterFiles


class Kube(Protocol):
    """What the chart's tools need of a cluster (LocalCluster has exactly this)."""

    @property
    def kubeconfig(self) -> Path: ...

    def env(self) -> dict[str, str]: ...

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...

    def helm(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True)
class RecordedCluster:
    """The cluster `python -m localcluster up` left running in a state directory."""

    files: ClusterFiles

    @property
    def kubeconfig(self) -> Path:
        return self.files.kubeconfig

    def env(self) -> dict[str, str]:
        helm_home = self.files.state_dir / "helm"
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.files.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    def _run(
        self, binary: str, args: Sequence[str], *, input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.files.bin_dir / binary), *args]
        done = subprocess.run(
            argv, input=input, capture_output=True, text=True, env=self.env(), timeout=timeout,
            check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise ClusterCommandError(done.returncode, argv, done.stdout, done.stderr)
        return done

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", args, input=input, check=check, timeout=timeout)

    def helm(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self._run("helm", args, input=None, check=check, timeout=timeout)
