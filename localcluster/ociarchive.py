"""OCI image archives written by hand: a tar with oci-layout, index.json and blobs/sha256/*,
which `ctr images import` loads (the name comes from the io.containerd.image.name annotation).

Used for the real node's tiny images (the pause sandbox, a busybox) made from files already on the
machine, so no registry and no image builder are needed. Layers are uncompressed tars with
fixed mtimes and owners, so the same inputs give the same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
OCI_REF_ANNOTATION = "org.opencontainers.image.ref.name"
_EPOCH = 0


@dataclass(frozen=True, kw_only=True)
class LayerFile:
    """One entry of a layer: a regular file (from `source` or `data`), a directory or a symlink."""

    path: str
    mode: int = 0o755
    source: Path | None = None
    data: bytes | None = None
    link_target: str | None = None
    directory: bool = False


def render_layer(entries: Sequence[LayerFile]) -> bytes:
    """An uncompressed layer tar holding `entries`, owned by root, mtime 0 (reproducible)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.mtime = _EPOCH
            info.mode = entry.mode
            if entry.directory:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.link_target is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link_target
                info.mode = 0o777
                tar.addfile(info)
            else:
                data = entry.data if entry.data is not None else _read(entry.source)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _read(source: Path | None) -> bytes:
    if source is None:
        raise ValueError("a LayerFile needs source, data, link_target or directory=True")
    return source.read_bytes()


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def render_archive(
    *, name: str, layers: Sequence[bytes], config: Mapping[str, Any]
) -> dict[str, bytes]:
    """The archive's members (path -> bytes) for image `name` (`repo:tag`) from `layers`.

    `config` is the image config's `config` object (User, Env, Cmd, ...)."""
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer) for layer in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "localcluster.ociarchive"}],
    }
    config_blob = json.dumps(image_config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {
            "mediaType": MEDIA_CONFIG,
            "digest": _digest(config_blob),
            "size": len(config_blob),
        },
        "layers": [
            {"mediaType": MEDIA_LAYER, "digest": _digest(layer), "size": len(layer)}
            for layer in layers
        ],
    }
    manifest_blob = json.dumps(manifest, sort_keys=True).encode()
    tag = name.rpartition(":")[2]
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": _digest(manifest_blob),
                "size": len(manifest_blob),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {CONTAINERD_NAME_ANNOTATION: name, OCI_REF_ANNOTATION: tag},
            }
        ],
    }
    members = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
    }
    for blob in (config_blob, manifest_blob, *layers):
        members["blobs/sha256/" + _digest(blob).removeprefix("sha256:")] = blob
    return members


def write_archive(path: Path, members: Mapping[str, bytes]) -> Path:
    """Write `members` as a tar at `path`, atomically (a reader never sees half an archive)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = _EPOCH
            tar.addfile(info)
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = _EPOCH
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)
    return path


def archive_image_names(path: Path) -> list[str]:
    """The image names an archive's index.json gives (containerd's annotation, else the OCI
    ref name); for checking what an import will create."""
    with tarfile.open(path) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ValueError(f"{path} has no index.json: not an OCI archive")
        index = json.load(member)
    names = []
    for manifest in index.get("manifests", []):
        annotations = manifest.get("annotations") or {}
        name = annotations.get(CONTAINERD_NAME_ANNOTATION) or annotations.get(OCI_REF_ANNOTATION)
        if name:
            names.append(str(name))
    return names
