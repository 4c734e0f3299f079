"""The server's process environment before torch loads: one CUDA process per server."""

from __future__ import annotations

import os

import pytest

from kuberank_inference.serving import compile_in_process


def test_torch_compile_runs_in_the_server_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    compile_in_process()
    assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == "1"


def test_an_explicit_compile_thread_count_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "4")
    compile_in_process()
    assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == "4"
