"""Fixtures for the chart's tests: the pinned helm binary and a renderer of the chart."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.toolchain import ToolchainMissingError, locate

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = REPO_ROOT / "charts" / "kuberank"

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """helm from the version-keyed cache that `make tools` fills (part of `make test`)."""
    try:
        return locate()["helm"]
    except ToolchainMissingError as error:
        pytest.fail(f"helm is not built: {error}; run `make tools`")


def run_helm(helm_bin: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """helm with its config, cache and data under `home`, so no user setting leaks in."""
    env = {
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [str(helm_bin), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="session")
def helm(helm_bin: Path, helm_home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return run_helm(helm_bin, *args, home=helm_home)

    return call


@pytest.fixture(scope="session")
def render(helm: Callable[..., subprocess.CompletedProcess[str]]) -> Render:
    """`helm template` of the chart with --set pairs and values files; the parsed objects."""

    def template(
        *sets: str,
        values: Sequence[Path] = (),
        namespace: str = "kuberank-system",
        release: str = "kuberank",
        extra: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        args = ["template", release, str(CHART_DIR), "--namespace", namespace, *extra]
        for pair in sets:
            args += ["--set", pair]
        for path in values:
            args += ["--values", str(path)]
        done = helm(*args)
        assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stderr}"
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    return template
