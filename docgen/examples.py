"""The README's example manifests: the text between `<!-- example: PATH -->` and
`<!-- example end -->` is the repository file PATH in a yaml fence, so the README shows exactly
the file a test runs (deploy/examples/hpa.yaml: tests/e2e/test_hpa_custom_metrics.py). Pure."""

from __future__ import annotations

import re
from collections.abc import Callable

START = re.compile(r"<!-- example: (?P<path>[\w./-]+) -->\n")
END_MARKER = "<!-- example end -->"


def included_paths(readme: str) -> list[str]:
    """The PATHs the README includes, in order."""
    return [m.group("path") for m in START.finditer(readme)]


def splice(*, readme: str, read: Callable[[str], str]) -> str:
    """The README with each example block replaced by `read(PATH)` in a yaml fence."""
    out: list[str] = []
    position = 0
    for match in START.finditer(readme):
        end = readme.find(END_MARKER, match.end())
        if end < 0:
            raise ValueError(f"README.md: {match.group(0).strip()} has no {END_MARKER!r}")
        body = read(match.group("path"))
        if not body.endswith("\n"):
            body += "\n"
        out += [readme[position : match.end()], "```yaml\n", body, "```\n"]
        position = end
    out.append(readme[position:])
    return "".join(out)
