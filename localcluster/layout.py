"""Where one cluster keeps its files inside its state directory. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClusterFiles:
    """Paths inside a cluster's state directory (everything is removed with it)."""

    state_dir: Path

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def etcd_data_dir(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def bin_dir(self) -> Path:
        return self.state_dir / "bin"

    @property
    def home_dir(self) -> Path:
        """HOME for the tools, so no user-level config (~/.kwok, ~/.kube, helm's) leaks in."""
        return self.state_dir / "home"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def kwok_config(self) -> Path:
        return self.state_dir / "kwok.yaml"

    @property
    def record(self) -> Path:
        """JSON record of the running components (pids), read by `down` and `status`."""
        return self.state_dir / "cluster.json"

    def component_kubeconfig(self, identity: str) -> Path:
        return self.state_dir / f"{identity}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def cert_dir(self, component: str) -> Path:
        return self.state_dir / "serving-certs" / component
