"""Random-weight cross-encoders of the benchmark shapes (speed depends on shape, not weights),
saved as ordinary checkpoints so the server loads them through its real loading path."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    family: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    description: str


SHAPES = {
    "large": Shape(
        "large",
        "xlm-roberta",
        24,
        1024,
        16,
        4096,
        250002,
        "XLMRobertaForSequenceClassification 24x1024, 16 heads, ffn 4096, vocab 250002 "
        "(bge-reranker-v2-m3 shape)",
    ),
    "base": Shape(
        "base",
        "bert",
        12,
        768,
        12,
        3072,
        30522,
        "BertForSequenceClassification 12x768, 12 heads, ffn 3072, vocab 30522",
    ),
    "tiny": Shape(
        "tiny", "bert", 2, 128, 2, 512, 30522, "BertForSequenceClassification 2x128 (CPU smoke)"
    ),
}


def copy_tokenizer(shape: Shape, target: Path, *, tokenizer_dir: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, target / name)
    if shape.family == "xlm-roberta":
        # an XLM-R tokenizer returns no token types (the model has one); make BERT's alike
        path = target / "tokenizer_config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        config["model_input_names"] = ["input_ids", "attention_mask"]
        path.write_text(json.dumps(config), encoding="utf-8")


def build_model_dir(shape: Shape, target: Path, *, tokenizer_dir: Path, seed: int = 0) -> Path:
    if (target / "config.json").is_file():
        copy_tokenizer(shape, target, tokenizer_dir=tokenizer_dir)
        return target
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    torch.manual_seed(seed)
    common: dict[str, Any] = {
        "num_hidden_layers": shape.layers,
        "hidden_size": shape.hidden,
        "num_attention_heads": shape.heads,
        "intermediate_size": shape.ffn,
        "vocab_size": shape.vocab,
        "num_labels": 1,
    }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model: Any
    with torch.device(device):
        if shape.family == "xlm-roberta":
            config = XLMRobertaConfig(
                max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, **common
            )
            model = XLMRobertaForSequenceClassification(config)
        else:
            bert = BertConfig(max_position_embeddings=512, type_vocab_size=2, **common)
            model = BertForSequenceClassification(bert)
    model.to(torch.bfloat16).save_pretrained(str(target))
    copy_tokenizer(shape, target, tokenizer_dir=tokenizer_dir)
    del model
    return target
