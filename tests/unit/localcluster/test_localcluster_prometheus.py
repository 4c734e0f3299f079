"""Where the harness finds the Go-built Prometheus (the one with kubernetes_sd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster import toolchain


def test_prometheus_is_cached_by_its_pinned_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERANK_CACHE", str(tmp_path))
    version = toolchain.parse_versions(toolchain.VERSIONS_FILE.read_text())["PROMETHEUS_VERSION"]
    binary = tmp_path / "bin" / f"prometheus-{version}" / "prometheus"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert toolchain.prometheus_binary() == binary


def test_a_missing_prometheus_says_to_run_make_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERANK_CACHE", str(tmp_path))
    with pytest.raises(toolchain.ToolchainMissingError, match=r"prometheus-v.*make tools"):
        toolchain.prometheus_binary()
