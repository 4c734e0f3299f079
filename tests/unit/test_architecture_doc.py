"""docs/architecture.md matches the tree: every package it names exists and every package is
named. The parsing rule is the one the page's header comment states."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
# The three programs and the tooling; every package under them must be on the page.
ROOTS = (
    "operator/kuberank_operator",
    "sidecar/kuberank_sidecar",
    "inference/kuberank_inference",
    "localcluster",
    "docgen",
)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_SPAN = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(
    r"(?P<path>(?:" + "|".join(re.escape(r) for r in ROOTS) + r")(?:/[A-Za-z_][A-Za-z0-9_]*)*)"
    r"(?P<suffix>/|\.py)?"
)


def named_paths(markdown: str) -> tuple[set[str], set[str]]:
    """(packages, modules) the page names: backticked spans that are nothing but a path under a
    root, outside HTML comments; a trailing `.py` makes a module, anything else a package."""
    packages: set[str] = set()
    modules: set[str] = set()
    for span in _SPAN.findall(_COMMENT.sub("", markdown)):
        match = _PATH.fullmatch(span.strip())
        if match is None:
            continue
        if match["suffix"] == ".py":
            modules.add(match["path"] + ".py")
        else:
            packages.add(match["path"])
    return packages, modules


def product_packages(repo: Path) -> set[str]:
    """Every directory with an __init__.py under the roots, the roots included."""
    found: set[str] = set()
    for root in ROOTS:
        for init in (repo / root).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                found.add(init.parent.relative_to(repo).as_posix())
    return found


def test_the_parsing_rule() -> None:
    page = (
        "<!-- `docgen/ignored/` is in a comment -->\n"
        "`inference/kuberank_inference/engine/` and `localcluster` are packages, "
        "`localcluster/cluster.py` a module; `python -m localcluster demo`, "
        "`tests/unit/localcluster` and `docgen.sources` are prose."
    )
    assert named_paths(page) == (
        {"inference/kuberank_inference/engine", "localcluster"},
        {"localcluster/cluster.py"},
    )


def test_every_named_package_and_module_exists() -> None:
    packages, modules = named_paths(DOC.read_text())
    missing = sorted(p for p in packages if not (REPO / p / "__init__.py").is_file())
    missing += sorted(m for m in modules if not (REPO / m).is_file())
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


def test_every_package_is_named() -> None:
    packages, _ = named_paths(DOC.read_text())
    unnamed = sorted(product_packages(REPO) - packages)
    assert not unnamed, (
        f"docs/architecture.md does not name {unnamed}: add each as `path/` with what it owns"
    )
