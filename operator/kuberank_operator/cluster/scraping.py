"""Scrape the inference and sidecar /metrics endpoints of pods: the only HTTP to pods."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from kuberank_operator.model.signals import (
    INFERENCE_METRICS_PORT,
    SIDECAR_METRICS_PORT,
    MetricsFormatError,
    PodScrape,
    PodTuning,
    parse_inference_metrics,
    parse_sidecar_metrics,
    parse_tuning_state,
)

log = logging.getLogger(__name__)

# Large enough for a sidecar with 8 GPUs and every label; a bigger body is not ours.
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class PodTarget:
    """A pod to scrape: its name and IP, and whether it has the GPU sidecar."""

    pod: str
    ip: str
    sidecar: bool = True


def metrics_url(ip: str, port: int) -> str:
    host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
    return f"http://{host}:{port}/metrics"


async def fetch_text(session: aiohttp.ClientSession, url: str) -> str | None:
    """The body of a 200 answer, or None (logged at debug) for anything else."""
    try:
        async with session.get(url) as response:
            if response.status != 200:
                log.debug("scrape %s: HTTP %s", url, response.status)
                return None
            body = await response.content.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                log.debug("scrape %s: body over %d bytes", url, MAX_BODY_BYTES)
                return None
            return body.decode("utf-8", errors="replace")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.debug("scrape %s: %s", url, exc)
        return None


async def scrape_pod(
    session: aiohttp.ClientSession,
    target: PodTarget,
    *,
    taken_at: float,
    inference_port: int = INFERENCE_METRICS_PORT,
    sidecar_port: int = SIDECAR_METRICS_PORT,
) -> PodScrape:
    """Both endpoints of one pod, concurrently; an endpoint that fails reads as None."""
    urls = [metrics_url(target.ip, inference_port)]
    if target.sidecar:
        urls.append(metrics_url(target.ip, sidecar_port))
    texts = await asyncio.gather(*(fetch_text(session, url) for url in urls))
    inference = gpu = None
    try:
        if texts[0] is not None:
            inference = parse_inference_metrics(texts[0])
    except MetricsFormatError as exc:
        log.debug("scrape %s: %s", urls[0], exc)
    try:
        if len(texts) > 1 and texts[1] is not None:
            gpu = parse_sidecar_metrics(texts[1])
    except MetricsFormatError as exc:
        log.debug("scrape %s: %s", urls[1], exc)
    return PodScrape(pod=target.pod, taken_at=taken_at, inference=inference, gpu=gpu)


async def scrape_pods(
    session: aiohttp.ClientSession,
    targets: Sequence[PodTarget],
    *,
    taken_at: float,
    inference_port: int = INFERENCE_METRICS_PORT,
    sidecar_port: int = SIDECAR_METRICS_PORT,
) -> list[PodScrape]:
    """Every target at once; the result keeps the order of `targets`."""
    scrapes = (
        scrape_pod(
            session,
            target,
            taken_at=taken_at,
            inference_port=inference_port,
            sidecar_port=sidecar_port,
        )
        for target in targets
    )
    return list(await asyncio.gather(*scrapes))


async def scrape_tuning(
    session: aiohttp.ClientSession,
    targets: Sequence[PodTarget],
    *,
    sidecar_port: int = SIDECAR_METRICS_PORT,
) -> dict[str, PodTuning]:
    """Each pod's tuning state from its sidecar's /metrics; pods that gave none are left out."""

    async def one(target: PodTarget) -> tuple[str, PodTuning | None]:
        url = metrics_url(target.ip, sidecar_port)
        text = await fetch_text(session, url)
        if text is None:
            return target.pod, None
        try:
            return target.pod, parse_tuning_state(text)
        except MetricsFormatError as exc:
            log.debug("scrape %s: %s", url, exc)
            return target.pod, None

    found = await asyncio.gather(*(one(t) for t in targets if t.sidecar))
    return {pod: tuning for pod, tuning in found if tuning is not None}


def new_session(*, timeout_s: float) -> aiohttp.ClientSession:
    """A client session for scrapes: short timeouts, no proxy from the environment."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 2.0)),
        trust_env=False,
    )
