"""The device handshake file: which GPU or MIG device this process uses, for the sidecar that
exports that device's telemetry (team contract, version 1)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_ID_PREFIXES = ("GPU-", "MIG-")


def device_uuids(
    *, environ: Mapping[str, str], framework_uuids: Sequence[str], device: str
) -> list[str]:
    """The device's UUIDs: the device plugin's GPU-/MIG- ids when it set them (MIG slices show
    only there), else what the framework reports."""
    if device == "cpu":
        return []
    for variable in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        listed = [part.strip() for part in environ.get(variable, "").split(",") if part.strip()]
        if listed and all(part.startswith(_ID_PREFIXES) for part in listed):
            return listed
    return list(framework_uuids)


def handshake_document(
    *, pid: int, device: str, environ: Mapping[str, str], uuids: Sequence[str], now: float
) -> dict[str, Any]:
    return {
        "version": 1,
        "pid": pid,
        "device": "cuda" if device.startswith("cuda") else "cpu",
        "cuda_visible_devices": environ.get("CUDA_VISIBLE_DEVICES"),
        "uuids": list(uuids),
        "written_at": now,
    }


def write_handshake(path: Path, document: Mapping[str, Any], *, explicit: bool) -> bool:
    """Write atomically; when the path was not asked for and its folder is missing, skip."""
    if not path.parent.is_dir():
        if explicit:
            raise FileNotFoundError(
                f"--device-handshake-file {path}: the directory {path.parent} does not exist; "
                "mount the shared volume there or leave the flag out"
            )
        log.debug("no %s: device handshake skipped", path.parent)
        return False
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(document), encoding="utf-8")
    os.replace(partial, path)
    return True


def current_time() -> float:
    return time.time()
