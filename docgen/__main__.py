"""Regenerate (or, with --check, verify) the generated reference documents.

python -m docgen crd            # crds/*.yaml -> docs/configuration.md
python -m docgen chart-values   # charts/kuberank/values.yaml -> its README's table
python -m docgen all --check    # exit 1 naming each stale file
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from docgen import sources

TARGETS: dict[str, sources.Generator] = {
    "crd": sources.configuration_reference,
    "chart-values": sources.chart_readme,
    "dashboard": sources.grafana_dashboard,
    "readme-bench": sources.readme_benchmarks,
    "readme-examples": sources.readme_examples,
    "metrics": sources.metrics_reference,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docgen", description=__doc__)
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    names = list(TARGETS) if args.target == "all" else [args.target]
    stale = 0
    for name in names:
        path, text = TARGETS[name]()
        current = path.read_text() if path.exists() else ""
        relative = path.relative_to(sources.REPO_ROOT)
        if current == text:
            print(f"{relative}: up to date")
        elif args.check:
            stale += 1
            print(f"{relative}: stale; run `python -m docgen {name}`", file=sys.stderr)
        else:
            path.write_text(text)
            print(f"{relative}: written")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
