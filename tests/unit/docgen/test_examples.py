"""The README's example blocks are the files they name."""

from __future__ import annotations

import pytest

from docgen import examples

README = """intro
<!-- example: deploy/examples/a.yaml -->
```yaml
stale: true
```
<!-- example end -->
middle
<!-- example: deploy/examples/b.yaml -->
<!-- example end -->
end
"""


def test_each_block_becomes_its_file() -> None:
    files = {"deploy/examples/a.yaml": "a: 1\n", "deploy/examples/b.yaml": "b: 2"}
    out = examples.splice(readme=README, read=files.__getitem__)
    assert out == (
        "intro\n<!-- example: deploy/examples/a.yaml -->\n"
        "```yaml\na: 1\n```\n<!-- example end -->\n"
        "middle\n<!-- example: deploy/examples/b.yaml -->\n"
        "```yaml\nb: 2\n```\n<!-- example end -->\n"
        "end\n"
    )
    assert examples.splice(readme=out, read=files.__getitem__) == out
    assert examples.included_paths(README) == ["deploy/examples/a.yaml", "deploy/examples/b.yaml"]


def test_an_unclosed_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="example end"):
        examples.splice(readme="<!-- example: x.yaml -->\n", read=lambda _: "")
