"""Where each generated document comes from and goes to (the only file I/O of docgen)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from docgen import chart_values, crd_reference, dashboard

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = REPO_ROOT / "crds"
CONFIGURATION_MD = REPO_ROOT / "docs" / "configuration.md"
CHART_DIR = REPO_ROOT / "charts" / "kuberank"
DASHBOARD_JSON = REPO_ROOT / "dashboards" / "kuberank.json"

# A generator: the path it writes and the text that belongs there.
Generator = Callable[[], tuple[Path, str]]


def crd_files() -> list[Path]:
    """The CRDs (crds/*.yaml; examples live in crds/examples/ and are not CRDs)."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no CRD in {CRD_DIR}: expected crds/<plural>.<group>.yaml")
    return files


def configuration_reference() -> tuple[Path, str]:
    """docs/configuration.md: the references of every kuberank.dev CRD, one after another."""
    parts: list[str] = []
    for path in crd_files():
        crd = yaml.safe_load(path.read_text())
        if crd.get("spec", {}).get("group") != "kuberank.dev":
            continue
        parts.append(crd_reference.render_crd(crd=crd, source=str(path.relative_to(REPO_ROOT))))
    return CONFIGURATION_MD, "\n".join(parts)


def chart_readme() -> tuple[Path, str]:
    """charts/kuberank/README.md with its parameter table rendered from values.yaml."""
    readme = CHART_DIR / "README.md"
    table = chart_values.render_table(values_text=(CHART_DIR / "values.yaml").read_text())
    return readme, chart_values.splice(readme=readme.read_text(), table=table)


def grafana_dashboard() -> tuple[Path, str]:
    """dashboards/kuberank.json (the chart packages a copy: `make sync-chart`)."""
    return DASHBOARD_JSON, json.dumps(dashboard.build_dashboard(), indent=2) + "\n"


METRICS_MD = REPO_ROOT / "docs" / "metrics.md"


def metrics_reference() -> tuple[Path, str]:
    """docs/metrics.md from real scrapes (starts the inference server and the sidecar)."""
    import tempfile

    from docgen import metrics_reference, scraping

    with tempfile.TemporaryDirectory(prefix="kuberank-metrics-") as workdir:
        expositions = scraping.scrape_components(Path(workdir))
    return METRICS_MD, metrics_reference.render(expositions)


README_MD = REPO_ROOT / "README.md"
RESULTS_MD = REPO_ROOT / "bench" / "RESULTS.md"


def readme_benchmarks() -> tuple[Path, str]:
    """README.md with its benchmark section copied from bench/RESULTS.md's tables."""
    from docgen import benchmarks

    body = benchmarks.render(RESULTS_MD.read_text() if RESULTS_MD.exists() else "")
    return README_MD, benchmarks.splice(readme=README_MD.read_text(), body=body)


def readme_examples() -> tuple[Path, str]:
    """README.md with its example manifests copied from the files the tests run."""
    from docgen import examples

    def read(path: str) -> str:
        return (REPO_ROOT / path).read_text()

    return README_MD, examples.splice(readme=README_MD.read_text(), read=read)
