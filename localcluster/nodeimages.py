"""The real node's own images, made here without a registry: the sandbox ("pause") image compiled
from the pinned kubernetes module's build/pause/linux/pause.c with `gcc -static`, and a tiny
busybox image from Debian's busybox-static for the node's tests. Both are OCI archives cached by
content in $KUBERANK_CACHE/images (a warm call only hashes two files)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from localcluster.ociarchive import LayerFile, render_archive, render_layer, write_archive
from localcluster.toolchain import REPO_ROOT, cache_dir, parse_versions

PAUSE_IMAGE_REPO = "kuberank.local/pause"
BUSYBOX_IMAGE_REPO = "kuberank.local/busybox"
BUSYBOX_BINARY = Path("/bin/busybox")
# what the node's tests run in busybox; each becomes a /bin symlink to busybox
BUSYBOX_APPLETS = (
    "sh", "cat", "echo", "id", "sleep", "touch", "ls", "mkdir", "true", "false",
    "httpd", "wget", "nc", "hostname", "head", "tr", "seq", "env",
)  # fmt: skip
# the UID/GID images made here run as (no /etc/passwd needed with numeric ids)
NONROOT_UID = 65532
_KUBERNETES_MODULE_DIR = REPO_ROOT / "hack" / "go" / "kubernetes"


class NodeImageError(RuntimeError):
    """An image of the real node could not be made; the message says what is missing."""


def images_dir() -> Path:
    return cache_dir() / "images" / "node"


def kuberank_image_archive(name: str) -> Path:
    """The OCI archive `make images` (hack/build-images.sh) wrote for kuberank's image `name`
    (kuberank-operator, kuberank-inference); FileNotFoundError saying how to build it."""
    path = cache_dir() / "images" / f"{name}.oci.tar"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: build the images with `make images` (hack/build-images.sh)"
        )
    return path.resolve()


def _short_hash(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def kubernetes_module_dir() -> Path:
    """Where Go keeps the pinned k8s.io/kubernetes module's source (downloaded if missing)."""
    version = parse_versions((REPO_ROOT / "hack" / "go" / "versions.env").read_text())[
        "K8S_VERSION"
    ]
    go = shutil.which("go")
    if go is None:
        raise NodeImageError("'go' is not on PATH: it locates pause.c in the kubernetes module")
    result = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        cwd=_KUBERNETES_MODULE_DIR,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    if result.returncode != 0:
        raise NodeImageError(f"go mod download k8s.io/kubernetes@{version}: {result.stderr}")
    return Path(json.loads(result.stdout)["Dir"])


def pause_image() -> tuple[Path, str]:
    """(archive, image name) of the pause image, built if its archive is not cached."""
    source = kubernetes_module_dir() / "build" / "pause" / "linux" / "pause.c"
    makefile = (source.parent.parent / "Makefile").read_text()
    tag = next(
        (
            line.split("?=", 1)[1].strip()
            for line in makefile.splitlines()
            if line.startswith("TAG ?=")
        ),
        "3.10",
    )
    gcc = shutil.which("gcc")
    if gcc is None:
        raise NodeImageError("gcc is missing (hack/install-system-deps.sh installs it)")
    gcc_version = subprocess.run(
        [gcc, "--version"], capture_output=True, check=True
    ).stdout.splitlines()[0]
    name = f"{PAUSE_IMAGE_REPO}:{tag}"
    archive = images_dir() / f"pause-{tag}-{_short_hash(source.read_bytes(), gcc_version)}.tar"
    if archive.is_file():
        return archive, name
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        # the flags of build/pause/Makefile (VERSION names the module's release, not git)
        compiled = subprocess.run(
            [gcc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{tag}-kuberank",
             "-o", str(binary), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if compiled.returncode != 0:
            raise NodeImageError(
                f"gcc -static {source} failed (is libc6-dev installed?): {compiled.stderr}"
            )
        layer = render_layer([LayerFile(path="pause", source=binary, mode=0o755)])
    members = render_archive(
        name=name,
        layers=[layer],
        config={"Entrypoint": ["/pause"], "User": "65535:65535"},
    )
    return write_archive(archive, members), name


def busybox_image() -> tuple[Path, str]:
    """(archive, image name) of a busybox image that runs as a non-root user by default."""
    if not BUSYBOX_BINARY.is_file():
        raise NodeImageError(
            f"{BUSYBOX_BINARY} is missing: install Debian's busybox-static "
            "(hack/install-system-deps.sh)"
        )
    binary = BUSYBOX_BINARY.read_bytes()
    version = subprocess.run(
        [str(BUSYBOX_BINARY)], capture_output=True, text=True, check=False
    ).stdout.split()
    tag = next((v.lstrip("v") for v in version if v.startswith("v1.")), "static")
    tag = "".join(c if c.isalnum() or c in "._-" else "-" for c in tag)[:64]
    name = f"{BUSYBOX_IMAGE_REPO}:{tag}"
    key = _short_hash(binary, ",".join(BUSYBOX_APPLETS).encode())
    archive = images_dir() / f"busybox-{tag}-{key}.tar"
    if archive.is_file():
        return archive, name
    entries = [
        LayerFile(path="bin", directory=True),
        LayerFile(path="tmp", directory=True, mode=0o1777),
        LayerFile(path="bin/busybox", data=binary, mode=0o755),
        *(LayerFile(path=f"bin/{applet}", link_target="busybox") for applet in BUSYBOX_APPLETS),
    ]
    members = render_archive(
        name=name,
        layers=[render_layer(entries)],
        config={
            "User": f"{NONROOT_UID}:{NONROOT_UID}",
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh"],
        },
    )
    return write_archive(archive, members), name
