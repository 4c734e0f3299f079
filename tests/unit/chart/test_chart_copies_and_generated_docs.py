"""Copies the chart packages equal their sources; generated documents are current."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import pytest

from docgen import sources
from tests.unit.chart.conftest import CHART_DIR, REPO_ROOT

PAIRS = [
    (REPO_ROOT / "crds", "*.yaml", CHART_DIR / "crds"),
    (REPO_ROOT / "dashboards", "*.json", CHART_DIR / "files" / "dashboards"),
    (REPO_ROOT / "deploy" / "prometheus", "*.yaml", CHART_DIR / "files" / "rules"),
]


@pytest.mark.parametrize(("source", "pattern", "copy"), PAIRS, ids=["crds", "dashboards", "rules"])
def test_chart_copy_equals_its_source(source: Path, pattern: str, copy: Path) -> None:
    expected = sorted(p.name for p in source.glob(pattern))
    assert expected, f"nothing matches {source}/{pattern}"
    assert sorted(p.name for p in copy.glob(pattern)) == expected, "run `make sync-chart`"
    for name in expected:
        assert filecmp.cmp(source / name, copy / name, shallow=False), (
            f"{copy / name} differs from {source / name}: run `make sync-chart`"
        )


def test_sync_script_check_mode_agrees() -> None:
    done = subprocess.run(
        [str(REPO_ROOT / "hack" / "sync-chart-files.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_sync_script_reports_drift(tmp_path: Path) -> None:
    # A copy of the repository's relevant parts with one stale chart file.
    root = tmp_path / "repo"
    (root / "hack").mkdir(parents=True)
    script = root / "hack" / "sync-chart-files.sh"
    script.write_text((REPO_ROOT / "hack" / "sync-chart-files.sh").read_text())
    script.chmod(0o755)
    for sub in ("crds", "dashboards", "deploy/prometheus", "charts/kuberank/crds"):
        (root / sub).mkdir(parents=True)
    (root / "crds" / "a.yaml").write_text("kind: CustomResourceDefinition\n")
    (root / "charts" / "kuberank" / "crds" / "a.yaml").write_text("kind: Stale\n")
    (root / "charts" / "kuberank" / "crds" / "gone.yaml").write_text("kind: Removed\n")
    check = subprocess.run([str(script), "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 1
    assert "differs: charts/kuberank/crds/a.yaml" in check.stdout
    assert "stale: charts/kuberank/crds/gone.yaml" in check.stdout
    assert "make sync-chart" in check.stderr
    fix = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert fix.returncode == 0, fix.stderr
    assert (root / "charts/kuberank/crds/a.yaml").read_text() == "kind: CustomResourceDefinition\n"
    assert not (root / "charts/kuberank/crds/gone.yaml").exists()


@pytest.mark.parametrize(
    "generate",
    [
        sources.configuration_reference,
        sources.chart_readme,
        sources.grafana_dashboard,
        sources.readme_benchmarks,
        sources.readme_examples,
    ],
    ids=[
        "docs/configuration.md",
        "charts/kuberank/README.md",
        "dashboards/kuberank.json",
        "README.md benchmarks",
        "README.md examples",
    ],
)
def test_generated_file_is_current(generate: sources.Generator) -> None:
    path, text = generate()
    assert path.exists(), f"{path} is missing: run `make docs`"
    assert path.read_text() == text, f"{path} is stale: run `make docs`"


def test_readme_starts_with_the_two_commands() -> None:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in lines if line.startswith("make ")]
    assert commands[:2] == ["make demo", "make test"]


def test_benchmark_tables_are_copied_under_their_section_titles() -> None:
    from docgen import benchmarks

    results = "# R\n\n## GPU\n\ntext\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nmore\n## Empty\nnone\n"
    assert benchmarks.section_tables(results) == [("GPU", ["| a | b |", "|---|---|", "| 1 | 2 |"])]
    body = benchmarks.render(results)
    assert body.startswith("**GPU**\n\n| a | b |\n")
    readme = f"x\n{benchmarks.START_MARKER}\nold\n{benchmarks.END_MARKER}\ny\n"
    assert benchmarks.splice(readme=readme, body=body) == (
        f"x\n{benchmarks.START_MARKER}\n{body}{benchmarks.END_MARKER}\ny\n"
    )
