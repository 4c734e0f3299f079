"""Where the Go-built binaries of the local control plane live (built by hack/build-tools.sh)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VERSIONS_FILE = REPO_ROOT / "hack" / "go" / "versions.env"

# binary set name in the cache, its version key in versions.env, and the binaries it holds
_SETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("etcd", "ETCD_VERSION", ("etcd",)),
    (
        "k8s",
        "K8S_VERSION",
        ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    ),
    ("kwok", "KWOK_VERSION", ("kwok",)),
    ("helm", "HELM_VERSION", ("helm",)),
)


class ToolchainMissingError(RuntimeError):
    """A binary of the local control plane has not been built yet."""


def parse_versions(text: str) -> dict[str, str]:
    """KEY=VALUE lines of versions.env; comments and blank lines are skipped."""
    versions: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{VERSIONS_FILE}:{number}: expected KEY=VALUE, got {raw!r}")
        versions[key.strip()] = value.strip()
    return versions


def cache_dir() -> Path:
    """$KUBERANK_CACHE, default ~/.cache/kuberank (the same default as the Makefile)."""
    configured = os.environ.get("KUBERANK_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "kuberank"


def binary_paths(*, versions: dict[str, str], cache: Path) -> dict[str, Path]:
    """Binary name -> its path in the version-keyed cache."""
    paths: dict[str, Path] = {}
    for set_name, key, binaries in _SETS:
        if key not in versions:
            raise ValueError(f"{VERSIONS_FILE} has no {key}; add e.g. {key}=v1.2.3")
        for binary in binaries:
            paths[binary] = cache / "bin" / f"{set_name}-{versions[key]}" / binary
    return paths


@dataclass(frozen=True)
class Toolchain:
    """Absolute paths of every binary the harness runs."""

    versions: dict[str, str]
    paths: dict[str, Path]

    @property
    def kubernetes_version(self) -> str:
        return self.versions["K8S_VERSION"]

    def __getitem__(self, binary: str) -> Path:
        return self.paths[binary]


def locate() -> Toolchain:
    """The cached toolchain; a clear error naming the missing binaries and the fix if unbuilt."""
    versions = parse_versions(VERSIONS_FILE.read_text())
    paths = binary_paths(versions=versions, cache=cache_dir())
    missing = [str(p) for p in paths.values() if not os.access(p, os.X_OK)]
    if missing:
        raise ToolchainMissingError(
            "the local control plane is not built: missing "
            + ", ".join(missing)
            + ". Run `make tools` (first run builds from Go modules: ~30 min on 2 cores)"
        )
    return Toolchain(versions=versions, paths=paths)


def prometheus_binary() -> Path:
    """The Go-built Prometheus (with kubernetes_sd, which Debian's lacks); kept out of the
    control plane's sets so the cluster starts without it; a clear error if unbuilt."""
    version = parse_versions(VERSIONS_FILE.read_text()).get("PROMETHEUS_VERSION")
    if version is None:
        raise ValueError(f"{VERSIONS_FILE} has no PROMETHEUS_VERSION; add e.g. v0.316.0")
    path = cache_dir() / "bin" / f"prometheus-{version}" / "prometheus"
    if not os.access(path, os.X_OK):
        raise ToolchainMissingError(
            f"Prometheus is not built: missing {path}. Run `make tools` (first build: ~7 min)"
        )
    return path


NODE_BINARIES = ("kubelet", "kube-proxy")


def node_binaries() -> dict[str, Path]:
    """The real node's kubelet and kube-proxy (build set k8s-node, the control plane's version),
    kept out of the control plane's sets so a cluster without the node needs neither."""
    version = parse_versions(VERSIONS_FILE.read_text())["K8S_VERSION"]
    paths = {name: cache_dir() / "bin" / f"k8s-node-{version}" / name for name in NODE_BINARIES}
    missing = [str(p) for p in paths.values() if not os.access(p, os.X_OK)]
    if missing:
        raise ToolchainMissingError(
            f"the real node is not built: missing {', '.join(missing)}. Run `make tools` "
            "(first build: ~6 min), or start the cluster without it (KUBERANK_REAL_NODE=0)"
        )
    return paths
