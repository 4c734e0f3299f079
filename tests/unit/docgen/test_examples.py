"""The README's example blocks are the files they name."""

from __future__ import annotations

import pytest
import yaml

from docgen import examples, sources

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


def test_the_readme_shows_the_hpa_the_e2e_test_runs() -> None:
    # tests/e2e/test_hpa_custom_metrics.py runs deploy/examples/hpa.yaml; the README includes it
    readme = sources.README_MD.read_text()
    assert "deploy/examples/hpa.yaml" in examples.included_paths(readme)
    hpa = (sources.REPO_ROOT / "deploy" / "examples" / "hpa.yaml").read_text()
    assert hpa in readme, "run `python -m docgen readme-examples`"
    (metric,) = yaml.safe_load(hpa)["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "kuberank_inference_queue_tokens"
