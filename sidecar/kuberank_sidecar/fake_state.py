"""What a fake card is told at run time: the JSON state file (re-read whenever it changes) that
overrides a profile's values, and the settings file that keeps power limits and locked clocks
across sidecar restarts."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kuberank_sidecar.fake_nvml")


@dataclass
class CardSettings:
    """What the fake card has been set to."""

    power_limit_w: float
    gpu_clocks: tuple[int, int] | None = None
    memory_clocks: tuple[int, int] | None = None


class StateFile:
    """The state file's last good content; a half-written file keeps the previous state."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._data: Mapping[str, Any] = {}
        # the poller and the XID thread both read the state file
        self._lock = threading.Lock()

    def data(self) -> Mapping[str, Any]:
        with self._lock:
            return self._load()

    def _load(self) -> Mapping[str, Any]:
        if self.path is None:
            return self._data
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._data = None, {}
            return self._data
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                loaded = json.loads(self.path.read_text())
                if not isinstance(loaded, dict):
                    raise ValueError("the top level must be a JSON object")
            except (OSError, ValueError) as exc:
                # A half-written file: keep the last good state (writers should rename into place).
                log.warning("fake state file %s ignored: %s", self.path, exc)
                return self._data
            self._stamp, self._data = stamp, loaded
        return self._data

    def overrides(self, section: str, keys: Iterable[str]) -> Mapping[str, Any]:
        """The entries of `section` ("gpus" or "mig") under any of `keys`, merged in order."""
        entries = self.data().get(section, {})
        if not isinstance(entries, Mapping):
            return {}
        merged: dict[str, Any] = {}
        for key in keys:
            value = entries.get(key)
            if isinstance(value, Mapping):
                merged.update(value)
        return merged


def load_settings(path: Path | None, defaults: Mapping[str, float]) -> dict[str, CardSettings]:
    """Each GPU's settings: its default power limit, or what the settings file kept."""
    settings = {uuid: CardSettings(power_limit_w=watts) for uuid, watts in defaults.items()}
    if path is not None and path.exists():
        saved = json.loads(path.read_text())
        for uuid, entry in saved.items():
            if uuid in settings:
                settings[uuid] = CardSettings(
                    power_limit_w=float(entry["power_limit_w"]),
                    gpu_clocks=tuple(entry["gpu_clocks"]) if entry.get("gpu_clocks") else None,
                    memory_clocks=(
                        tuple(entry["memory_clocks"]) if entry.get("memory_clocks") else None
                    ),
                )
    return settings


def save_settings(path: Path | None, settings: Mapping[str, CardSettings]) -> None:
    if path is None:
        return
    payload = {uuid: dataclasses.asdict(s) for uuid, s in settings.items()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)
