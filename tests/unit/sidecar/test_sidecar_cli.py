"""Command line: env defaults, strict flag errors, --dry-run on the fake card, documented names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kuberank_sidecar.cli import build_parser, config_from_args, main
from kuberank_sidecar.collection import ExportContext, TelemetryView, render_families
from kuberank_sidecar.fake_nvml import FakeNvml
from kuberank_sidecar.records import DeviceSample, OwnedDevice, XidTally
from kuberank_sidecar.tuning_plans import ClockRange, GpuTuningStatus, TuningPlan, TuningState

REPO = Path(__file__).resolve().parents[3]


def test_every_flag_reads_its_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERANK_INTERVAL", "5")
    monkeypatch.setenv("KUBERANK_POD_NAME", "rr-7")
    monkeypatch.setenv("KUBERANK_TUNING_ASSUME_EXCLUSIVE", "true")
    monkeypatch.setenv("KUBERANK_GPU_LOCKED_CLOCKS", "1200:1800")
    config = config_from_args(build_parser().parse_args([]))
    assert config.interval_s == 5.0
    assert config.export.stale_after_s == 15.0
    assert config.export.pod == "rr-7"
    assert config.tuning_assume_exclusive
    assert config.tuning.gpu_clocks == ClockRange(1200, 1800)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--vram-safety-margin", "0.7"], "--vram-safety-margin: 0.7 is outside 0 to 0.5"),
        (["--interval", "10", "--stale-after", "5"], "--stale-after: 5 s is below --interval 10 s"),
        (["--interval", "0"], "--interval: must be above 0"),
        (["--gpu-locked-clocks", "fast"], "--gpu-locked-clocks: 'fast' is not MIN:MAX"),
        (["--backend", "fake", "--fake-profile", "h200x3"], "--fake-profile"),
    ],
)
def test_bad_flags_exit_with_a_message_naming_the_flag(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_sets_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "card.json"
    argv = [
        "--backend", "fake", "--fake-profile", "h100x8", "--devices", "3", "--dry-run",
        "--fake-settings-file", str(settings), "--tuning-assume-exclusive",
        "--power-limit-watts", "450", "--tuning-journal", str(tmp_path / "j.json"),
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plans"][0]["set_power_limit_watts"] == 450.0
    assert report["plans"][0]["restore_power_limit_watts"] == 700.0
    assert not settings.exists()
    assert not (tmp_path / "j.json").exists()
    assert main([*argv[:-4], "--power-limit-watts", "900"]) == 3
    assert "outside this GPU's 200–700 W" in capsys.readouterr().out


def test_docs_name_every_flag_and_metric() -> None:
    doc = (REPO / "docs/sidecar.md").read_text()
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert f"`{option}" in doc, f"docs/sidecar.md does not document {option}"
    fake = FakeNvml("h100x1")
    fake.open()
    gpu = fake.discover().gpus[0]
    plan = TuningPlan(gpu_uuid=gpu.uuid, lock_gpu_clocks=ClockRange(1200, 1800))
    view = TelemetryView(
        samples=[DeviceSample(device=OwnedDevice(gpu=gpu), taken_at=0.0, gpu=fake.read_gpu(gpu))],
        xids={gpu.uuid: XidTally(last_xid=79, counts={79: 1})},
        errors={("read_gpu", "timeout"): 1},
        tuning={gpu.uuid: GpuTuningStatus(TuningState.APPLIED)},
        plans={gpu.uuid: plan},
        now=0.0,
        poll_duration_s=0.01,
    )
    names = {f.name for f in render_families(view, ExportContext(hostname="h"))}
    names.add("kuberank_gpu_scrape_duration_seconds")
    for name in names:
        assert f"`{name}`" in doc, f"docs/sidecar.md does not document {name}"
