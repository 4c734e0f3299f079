"""Command line of kuberank-inference."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="kuberank-inference", description="kuberank inference")


def main(argv: Sequence[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0
