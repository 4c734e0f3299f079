"""Command line of kuberank-sidecar. Every --foo-bar flag also reads env KUBERANK_FOO_BAR."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from kuberank_sidecar.collection import ExportContext
from kuberank_sidecar.devices import NvmlBackend, NvmlError
from kuberank_sidecar.fake_nvml import PROFILES
from kuberank_sidecar.pod_resources import DEFAULT_SOCKET
from kuberank_sidecar.resolving import ResolverConfig
from kuberank_sidecar.runtime import SidecarConfig
from kuberank_sidecar.tuning_plans import TuningRequest, parse_clock_range

log = logging.getLogger("kuberank_sidecar")

DEFAULT_HANDSHAKE = Path("/var/run/kuberank/device.json")
DEFAULT_JOURNAL = Path("/var/run/kuberank/tuning-journal.json")
EXIT_REFUSED = 3


def _env(flag: str) -> str:
    return "KUBERANK_" + flag.lstrip("-").replace("-", "_").upper()


class _EnvDefaults(argparse.ArgumentParser):
    """Adds flags whose default comes from KUBERANK_<FLAG> when that variable is set."""

    def flag(self, name: str, *, default: object = None, **kwargs: object) -> None:
        env = _env(name)
        help_text = str(kwargs.pop("help", ""))
        if kwargs.get("action") == "store_true":
            raw = os.environ.get(env)
            if raw is not None:
                default = raw.strip().lower() in ("1", "true", "yes", "on")
        elif env in os.environ:
            default = os.environ[env]
        self.add_argument(name, default=default, help=f"{help_text} [env {env}]", **kwargs)  # type: ignore[arg-type]


def _optional_path(value: str) -> Path | None:
    """An empty value turns the file off."""
    return Path(value) if value.strip() else None


def _positive(flag: str) -> type[float]:
    class Positive(float):
        def __new__(cls, value: str) -> Positive:
            try:
                number = float(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{flag}: {value!r} is not a number") from None
            if number <= 0:
                raise argparse.ArgumentTypeError(f"{flag}: must be above 0, got {value}")
            return super().__new__(cls, number)

    return Positive


def build_parser() -> argparse.ArgumentParser:
    p = _EnvDefaults(
        prog="kuberank-sidecar",
        description=(
            "NVML telemetry exporter for one pod's GPU or MIG device, compatible with "
            "dcgm-exporter's metric names and labels, with opt-in power-limit and clock-lock "
            "tuning that is restored on exit. Metrics reference: docs/sidecar.md."
        ),
    )
    p.flag("--host", default="0.0.0.0", help="address to listen on")
    p.flag("--port", default=9400, type=int, help="port for /metrics, /healthz and /tuning")
    p.flag(
        "--interval",
        default=15.0,
        type=_positive("--interval"),
        help="seconds between NVML polls (scrapes are served from the latest poll)",
    )
    p.flag(
        "--stale-after",
        default=None,
        type=_positive("--stale-after"),
        help="drop a device's values when its latest reading is older than this many seconds "
        "(default: 3 × --interval)",
    )
    p.flag(
        "--resolve-interval",
        default=30.0,
        type=_positive("--resolve-interval"),
        help="seconds between re-reading which devices the pod owns",
    )
    p.flag(
        "--backend",
        default="nvml",
        choices=["nvml", "fake"],
        help="nvml: the driver through nvidia-ml-py; fake: a scripted host, for tests and demos",
    )
    p.flag(
        "--fake-profile",
        default="h100x8",
        choices=sorted(PROFILES),
        help="fake host to play: "
        + "; ".join(f"{k}: {v.description}" for k, v in PROFILES.items()),
    )
    p.flag(
        "--fake-state-file",
        default=None,
        type=Path,
        help="JSON file re-read every poll whose per-GPU values override the fake profile "
        "(format in docs/sidecar.md)",
    )
    p.flag(
        "--fake-settings-file",
        default=None,
        type=Path,
        help="where the fake card keeps power limit and locked clocks, so a restarted "
        "sidecar sees what the last one left",
    )
    p.flag(
        "--devices",
        default=None,
        help="explicit device list (UUIDs or indices, comma-separated) or 'all'; overrides "
        "pod-resources and the handshake file. Only for node-level use, demos and tests",
    )
    p.flag(
        "--pod-resources-socket",
        default=DEFAULT_SOCKET,
        type=Path,
        help="kubelet pod-resources socket; used when it exists",
    )
    p.flag(
        "--device-handshake-file",
        default=DEFAULT_HANDSHAKE,
        type=Path,
        help="device file written by the inference container; used when the socket is absent",
    )
    p.flag(
        "--hostname",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="Hostname label (default: env NODE_NAME, else the host name)",
    )
    p.flag("--pod-name", default="", help="pod label, from the downward API (metadata.name)")
    p.flag("--pod-namespace", default="", help="namespace label (metadata.namespace)")
    p.flag(
        "--container-name",
        default="",
        help="container label for devices whose container kubelet does not name",
    )
    p.flag(
        "--vram-safety-margin",
        default=0.10,
        type=float,
        help="share of device memory to keep free, 0 to 0.5; drives kuberank_gpu_vram_headroom_mib",
    )
    p.flag(
        "--power-limit-watts",
        default=None,
        type=_positive("--power-limit-watts"),
        help="tuning: set this power limit at start, restore the old one on exit",
    )
    p.flag(
        "--gpu-locked-clocks",
        default=None,
        help="tuning: lock graphics clocks to MIN:MAX MHz at start, unlock on exit",
    )
    p.flag(
        "--memory-locked-clocks",
        default=None,
        help="tuning: lock memory clocks to MIN:MAX MHz at start, unlock on exit",
    )
    p.flag(
        "--tuning-assume-exclusive",
        action="store_true",
        help="tune without the pod-resources socket, trusting that each pod gets whole GPUs",
    )
    p.flag(
        "--tuning-journal",
        default=DEFAULT_JOURNAL,
        type=_optional_path,
        help="file (on the pod's emptyDir) recording settings to restore after a crash; "
        "empty: keep no journal",
    )
    p.flag(
        "--dry-run",
        action="store_true",
        help="print the tuning plan checked against the card as JSON, change nothing, exit "
        f"(exit {EXIT_REFUSED} when refused)",
    )
    p.flag(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level",
    )
    return p


def config_from_args(args: argparse.Namespace) -> SidecarConfig:
    """Check the flags together; errors name the flag, the limit and the fix."""
    margin = float(args.vram_safety_margin)
    if not 0.0 <= margin <= 0.5:
        raise ValueError(f"--vram-safety-margin: {margin} is outside 0 to 0.5; use e.g. 0.1")
    interval = float(args.interval)
    stale = float(args.stale_after) if args.stale_after is not None else 3 * interval
    if stale < interval:
        raise ValueError(
            f"--stale-after: {stale:g} s is below --interval {interval:g} s; every value would "
            "be dropped between polls; use at least the interval"
        )
    request = TuningRequest(
        power_limit_w=None if args.power_limit_watts is None else float(args.power_limit_watts),
        gpu_clocks=(
            None
            if not args.gpu_locked_clocks
            else parse_clock_range("--gpu-locked-clocks", args.gpu_locked_clocks)
        ),
        memory_clocks=(
            None
            if not args.memory_locked_clocks
            else parse_clock_range("--memory-locked-clocks", args.memory_locked_clocks)
        ),
    )
    return SidecarConfig(
        export=ExportContext(
            hostname=args.hostname,
            pod=args.pod_name,
            namespace=args.pod_namespace,
            container=args.container_name,
            vram_safety_margin=margin,
            stale_after_s=stale,
        ),
        resolver=ResolverConfig(
            devices_flag=args.devices,
            pod_resources_socket=Path(args.pod_resources_socket),
            handshake_file=Path(args.device_handshake_file),
            pod_name=args.pod_name,
            pod_namespace=args.pod_namespace,
        ),
        tuning=request,
        interval_s=interval,
        resolve_interval_s=float(args.resolve_interval),
        tuning_journal=Path(args.tuning_journal) if args.tuning_journal else None,
        tuning_assume_exclusive=bool(args.tuning_assume_exclusive),
    )


def make_backend(args: argparse.Namespace) -> NvmlBackend:
    if args.backend == "fake":
        from kuberank_sidecar.fake_nvml import FakeNvml

        return FakeNvml(
            args.fake_profile,
            state_file=args.fake_state_file,
            settings_file=args.fake_settings_file,
        )
    from kuberank_sidecar.nvml_adapter import RealNvml

    return RealNvml()


def dry_run(config: SidecarConfig, backend: NvmlBackend) -> int:
    """Print the plan per GPU of the pod, checked against the card; set nothing."""
    from kuberank_sidecar.ownership import match_claim
    from kuberank_sidecar.resolving import DeviceResolver
    from kuberank_sidecar.tuning import TuningController

    backend.open()
    try:
        tree = backend.discover()
        claim = DeviceResolver(config.resolver).resolve(tree)
        owned, unknown = match_claim(claim, tree)
        controller = TuningController(
            backend,
            config.tuning,
            journal_path=config.tuning_journal,
            assume_exclusive=config.tuning_assume_exclusive,
        )
        plans = controller.plan(owned, claim, tree)
    finally:
        backend.close()
    report = {
        "dry_run": True,
        "device_source": claim.source,
        "devices": [d.uuid for d in owned],
        "unknown_devices": unknown,
        "tuning_requested": config.tuning.enabled,
        "plans": [plan.to_json() for _gpu, plan in plans],
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if not owned:
        print("dry run: no device of this pod was found; nothing to tune", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_REFUSED if any(plan.refusal for _gpu, plan in plans) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
        backend = make_backend(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.dry_run:
        try:
            return dry_run(config, backend)
        except NvmlError as exc:
            print(f"dry run: NVML failed: {exc}", file=sys.stderr)
            return 1

    from aiohttp import web

    from kuberank_sidecar.runtime import Sidecar
    from kuberank_sidecar.server import build_app

    sidecar = Sidecar(config, backend)
    try:
        web.run_app(build_app(sidecar), host=args.host, port=args.port, print=None, access_log=None)
    finally:
        # run_app's cleanup already restored tuning on SIGTERM/SIGINT; this covers errors.
        sidecar.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
