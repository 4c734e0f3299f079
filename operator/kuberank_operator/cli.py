"""Command line of kuberank-operator."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="kuberank-operator", description="kuberank operator")


def main(argv: Sequence[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0
