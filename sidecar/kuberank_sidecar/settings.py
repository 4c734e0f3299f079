"""The sidecar's settings: one typed model (pydantic-settings) read from flags and environment.

Every `--foo-bar` flag also reads `KUBERANK_FOO_BAR`: the flag wins over the variable, the
variable over the default. A bad value exits 2 with one line naming the flag or variable, the
value and what is accepted (cli.py prints it).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from kuberank_sidecar.fake_profiles import PROFILES
from kuberank_sidecar.pod_resources import DEFAULT_SOCKET

ENV_PREFIX = "KUBERANK_"
DEFAULT_HANDSHAKE = Path("/var/run/kuberank/device.json")
DEFAULT_JOURNAL = Path("/var/run/kuberank/tuning-journal.json")
EXIT_REFUSED = 3
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off", ""})


def _on_off(raw: object) -> object:
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word not in _ON | _OFF:
            raise ValueError(f"{raw!r} is neither on nor off: use true or false")
        return word in _ON
    return raw


def _above_zero(number: float) -> float:
    if number <= 0:
        raise ValueError(f"must be above 0, got {number:g}")
    return number


def _share_kept_free(share: float) -> float:
    if not 0.0 <= share <= 0.5:
        raise ValueError(f"{share:g} is outside 0 to 0.5; use e.g. 0.1")
    return share


def _known_profile(name: str) -> str:
    if name not in PROFILES:
        raise ValueError(f"{name!r} is unknown: choose one of {', '.join(sorted(PROFILES))}")
    return name


def _journal(raw: object) -> object:
    """An empty value turns the journal off."""
    return None if isinstance(raw, str) and not raw.strip() else raw


def _default_hostname() -> str:
    return os.environ.get("NODE_NAME") or socket.gethostname()


OnOff = Annotated[bool, BeforeValidator(_on_off)]
Seconds = Annotated[float, AfterValidator(_above_zero)]
FakeProfileName = Annotated[str, AfterValidator(_known_profile)]


class SidecarSettings(BaseSettings):
    """Every setting of kuberank-sidecar; each field is the flag `--<name with dashes>`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    host: str = Field("0.0.0.0", description="address to listen on")
    port: int = Field(9400, description="port for /metrics, /healthz and /tuning")
    interval: Seconds = Field(
        15.0, description="seconds between NVML polls (scrapes are served from the latest poll)"
    )
    stale_after: Seconds | None = Field(
        None,
        description="drop a device's values when its latest reading is older than this many "
        "seconds (default: 3 × --interval)",
    )
    resolve_interval: Seconds = Field(
        30.0, description="seconds between re-reading which devices the pod owns"
    )
    backend: Literal["nvml", "fake"] = Field(
        "nvml",
        description="nvml: the driver through nvidia-ml-py; fake: a scripted host, for tests "
        "and demos",
    )
    fake_profile: FakeProfileName = Field(
        "h100x8",
        description="fake host to play: "
        + "; ".join(f"{k}: {v.description}" for k, v in PROFILES.items()),
    )
    fake_state_file: Path | None = Field(
        None,
        description="JSON file re-read every poll whose per-GPU values override the fake "
        "profile (format in docs/sidecar.md)",
    )
    fake_settings_file: Path | None = Field(
        None,
        description="where the fake card keeps power limit and locked clocks, so a restarted "
        "sidecar sees what the last one left",
    )
    devices: str | None = Field(
        None,
        description="explicit device list (UUIDs or indices, comma-separated) or 'all'; "
        "overrides pod-resources and the handshake file. Only for node-level use, demos and "
        "tests",
    )
    pod_resources_socket: Path = Field(
        DEFAULT_SOCKET, description="kubelet pod-resources socket; used when it exists"
    )
    device_handshake_file: Path = Field(
        DEFAULT_HANDSHAKE,
        description="device file written by the inference container; used when the socket is "
        "absent",
    )
    hostname: str = Field(
        default_factory=_default_hostname,
        description="Hostname label (default: env NODE_NAME, else the host name)",
    )
    pod_name: str = Field("", description="pod label, from the downward API (metadata.name)")
    pod_namespace: str = Field("", description="namespace label (metadata.namespace)")
    container_name: str = Field(
        "", description="container label for devices whose container kubelet does not name"
    )
    vram_safety_margin: Annotated[float, AfterValidator(_share_kept_free)] = Field(
        0.10,
        description="share of device memory to keep free, 0 to 0.5; drives "
        "kuberank_gpu_vram_headroom_mib",
    )
    power_limit_watts: Seconds | None = Field(
        None, description="tuning: set this power limit at start, restore the old one on exit"
    )
    gpu_locked_clocks: str | None = Field(
        None, description="tuning: lock graphics clocks to MIN:MAX MHz at start, unlock on exit"
    )
    memory_locked_clocks: str | None = Field(
        None, description="tuning: lock memory clocks to MIN:MAX MHz at start, unlock on exit"
    )
    tuning_assume_exclusive: OnOff = Field(
        False,
        description="tune without the pod-resources socket, trusting that each pod gets whole GPUs",
    )
    tuning_journal: Annotated[Path | None, BeforeValidator(_journal)] = Field(
        DEFAULT_JOURNAL,
        description="file (on the pod's emptyDir) recording settings to restore after a crash; "
        "empty: keep no journal",
    )
    dry_run: OnOff = Field(
        False,
        description="print the tuning plan checked against the card as JSON, change nothing, "
        f"exit (exit {EXIT_REFUSED} when refused)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


def _variable(field: str) -> str:
    return ENV_PREFIX + field.upper()


def build_parser() -> argparse.ArgumentParser:
    """The flags of SidecarSettings; only flags given reach the namespace (as text)."""
    parser = argparse.ArgumentParser(
        prog="kuberank-sidecar",
        description=(
            "NVML telemetry exporter for one pod's GPU or MIG device, compatible with "
            "dcgm-exporter's metric names and labels, with opt-in power-limit and clock-lock "
            "tuning that is restored on exit. Metrics reference: docs/sidecar.md."
        ),
        argument_default=argparse.SUPPRESS,
    )
    for field, spec in SidecarSettings.model_fields.items():
        options: dict[str, Any] = {"dest": field, "help": _help_of(field, spec)}
        if spec.annotation is bool:
            options.update(action="store_const", const=True)
        elif get_origin(spec.annotation) is Literal:
            options["metavar"] = "{" + ",".join(map(str, get_args(spec.annotation))) + "}"
        parser.add_argument(_option(field), **options)
    return parser


def _help_of(field: str, spec: FieldInfo) -> str:
    return f"{spec.description} [env {_variable(field)}]".replace("%", "%%")


def read_settings(given: Mapping[str, object]) -> SidecarSettings:
    """Flags given over KUBERANK_* variables over defaults; ValueError says which and why."""
    merged = {**EnvSettingsSource(SidecarSettings)(), **given}
    try:
        return SidecarSettings.model_validate(merged)
    except ValidationError as error:
        raise ValueError(_explain(error.errors(include_url=False)[0], given)) from None


def _explain(problem: Any, given: Mapping[str, object]) -> str:
    field = str(problem["loc"][0])
    source = _option(field) if field in given else _variable(field)
    raw, kind, ctx = problem["input"], problem["type"], problem.get("ctx") or {}
    if kind == "value_error":
        reason = str(ctx["error"])
    elif kind == "literal_error":
        reason = f"{raw!r} is not one of {ctx['expected']}"
    elif kind in ("int_parsing", "float_parsing"):
        reason = f"{raw!r} is not a number"
    else:
        reason = f"{raw!r}: {problem['msg']}"
    return f"{source}: {reason}"
