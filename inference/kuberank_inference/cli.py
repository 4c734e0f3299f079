"""Command line of kuberank-inference (see `kuberank-inference --help` and docs/inference.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from kuberank_inference.config import build_parser, parse_config


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from kuberank_inference.serving import serve

    return asyncio.run(serve(config))


__all__ = ["build_parser", "main"]
