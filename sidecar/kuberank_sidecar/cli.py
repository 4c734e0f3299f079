"""Command line of kuberank-sidecar: the settings (settings.py: every --foo-bar flag also reads env
KUBERANK_FOO_BAR) turned into the sidecar's configuration, then the exporter or a dry run."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from kuberank_sidecar.collection import ExportContext
from kuberank_sidecar.devices import NvmlBackend, NvmlError
from kuberank_sidecar.resolving import ResolverConfig
from kuberank_sidecar.runtime import SidecarConfig
from kuberank_sidecar.settings import (
    EXIT_REFUSED,
    SidecarSettings,
    build_parser,
    read_settings,
)
from kuberank_sidecar.tuning_plans import TuningRequest, parse_clock_range

log = logging.getLogger("kuberank_sidecar")

__all__ = ["EXIT_REFUSED", "build_parser", "config_from_args", "main"]


def config_from_args(args: argparse.Namespace) -> SidecarConfig:
    """The flags given (over the environment) checked together; ValueError names the flag."""
    return config_from_settings(read_settings(vars(args)))


def config_from_settings(settings: SidecarSettings) -> SidecarConfig:
    """Check the settings together; errors name the flag, the limit and the fix."""
    interval = settings.interval
    stale = settings.stale_after if settings.stale_after is not None else 3 * interval
    if stale < interval:
        raise ValueError(
            f"--stale-after: {stale:g} s is below --interval {interval:g} s; every value would "
            "be dropped between polls; use at least the interval"
        )
    request = TuningRequest(
        power_limit_w=settings.power_limit_watts,
        gpu_clocks=(
            None
            if not settings.gpu_locked_clocks
            else parse_clock_range("--gpu-locked-clocks", settings.gpu_locked_clocks)
        ),
        memory_clocks=(
            None
            if not settings.memory_locked_clocks
            else parse_clock_range("--memory-locked-clocks", settings.memory_locked_clocks)
        ),
    )
    return SidecarConfig(
        export=ExportContext(
            hostname=settings.hostname,
            pod=settings.pod_name,
            namespace=settings.pod_namespace,
            container=settings.container_name,
            vram_safety_margin=settings.vram_safety_margin,
            stale_after_s=stale,
        ),
        resolver=ResolverConfig(
            devices_flag=settings.devices,
            pod_resources_socket=settings.pod_resources_socket,
            handshake_file=settings.device_handshake_file,
            pod_name=settings.pod_name,
            pod_namespace=settings.pod_namespace,
        ),
        tuning=request,
        interval_s=interval,
        resolve_interval_s=settings.resolve_interval,
        tuning_journal=settings.tuning_journal,
        tuning_assume_exclusive=settings.tuning_assume_exclusive,
    )


def make_backend(settings: SidecarSettings) -> NvmlBackend:
    if settings.backend == "fake":
        from kuberank_sidecar.fake_nvml import FakeNvml

        return FakeNvml(
            settings.fake_profile,
            state_file=settings.fake_state_file,
            settings_file=settings.fake_settings_file,
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
    given = vars(parser.parse_args(argv))
    try:
        settings = read_settings(given)
        config = config_from_settings(settings)
        backend = make_backend(settings)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.dry_run:
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
        web.run_app(
            build_app(sidecar), host=settings.host, port=settings.port, print=None, access_log=None
        )
    finally:
        # run_app's cleanup already restored tuning on SIGTERM/SIGINT; this covers errors.
        sidecar.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
