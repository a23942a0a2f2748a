"""What a new user meets first: logs, defaults, help, finding users, adapters that name their base model,
typos, run outcomes, plots and the setup script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from synthetic import synthetic_prepared

from lifelora.config import SHIPPED_CONFIGS
from lifelora.errors import LifeloraError

ROOT = Path(__file__).resolve().parents[1]
LENS = ["model.history_length=6", "model.embed_dim=8", "model.mlp_units=[16]", "train.max_epochs=2"]


@pytest.fixture
def prepared(tmp_path) -> Path:
    synthetic_prepared(tmp_path / "prepared", name="ml-synthetic")
    return tmp_path / "prepared"


# --- 1. logs: progress bars and table width off a terminal --------------------------------------------

BAR_LOOP = "from tqdm.auto import tqdm\nimport time\nfor _ in tqdm(range(200)):\n    time.sleep(0.01)\n"


@pytest.mark.parametrize("quiet", [True, False])
def test_progress_bars_written_to_a_file_update_rarely(quiet):
    setup = "from lifelora.cli.common import quiet_progress_bars\nquiet_progress_bars()\n" if quiet else ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    result = subprocess.run(
        [sys.executable, "-c", setup + BAR_LOOP], capture_output=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    updates = result.stderr.count(b"\r")  # bytes: text mode would turn the carriage returns into newlines
    if quiet:
        assert updates <= 3  # ~2 s of bar: its first and last state only
    else:
        assert updates > 5  # tqdm's default, ten a second: what floods a log


def test_training_written_to_a_log_file_has_few_progress_updates(prepared, tmp_path):
    """`lifelora lens train 2> log`: a bar per epoch, each updated once a minute, not once a step."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    args = ["lens", "train", "dataset=ml-synthetic", f"data_dir={prepared}", *LENS, "train.batch_size=8"]
    result = subprocess.run(
        [sys.executable, "-m", "lifelora", *args, "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        env={**env, "LIFELORA_HOME": str(tmp_path / "home")},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"train epoch 2" in result.stderr
    assert result.stderr.count(b"\r") <= 6  # ~100 steps an epoch: a step-by-step bar writes hundreds


def test_tables_and_log_lines_do_not_wrap_at_80_columns_off_a_terminal(monkeypatch, capsys):
    from lifelora.cli.common import log
    from lifelora.report import LOG_WIDTH, make_console, metrics_table, print_table

    monkeypatch.delenv("COLUMNS", raising=False)
    assert make_console().width == LOG_WIDTH
    name = "RecLoRA N=16, T=5, recent-K text history, uniform routing (1000 samples)"
    print_table(metrics_table("a long title " * 6, [(name, {"AUC": 0.71, "gAUC": 0.7})]))
    row = next(line for line in capsys.readouterr().out.splitlines() if "RecLoRA" in line)
    assert name in row and "0.7100" in row
    log("x" * 200)
    assert "x" * 200 in capsys.readouterr().err
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console().width == 100


# --- 2. one default dataset ------------------------------------------------------------------------------


def test_lens_and_llm_commands_default_to_the_demo_dataset():
    from lifelora.lens.din.config import LensConfig
    from lifelora.tasks.ctr.config import CTRConfig

    assert CTRConfig().dataset == LensConfig().dataset == "ml-100k"
    for path in SHIPPED_CONFIGS.rglob("*.yaml"):
        if path.parent.name == "update":  # settings of `lifelora update`, applied to a run that has its data
            continue
        assert "dataset" in yaml.safe_load(path.read_text()), f"{path.name} must name its dataset"


# --- 3. help ---------------------------------------------------------------------------------------------


def _commands():
    import typer

    from lifelora.cli import app

    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def _options_panel(text: str) -> str:
    start = text.find("─ Options ─")
    return text[start : text.find("╰", start)] if start >= 0 else ""


def test_every_option_and_argument_is_described_and_flags_take_no_value():
    from typer.testing import CliRunner

    from lifelora.cli import app

    commands = _commands()
    assert len(commands) > 15
    for path, command in commands:
        for param in command.params:
            assert (param.help or "").strip(), f"lifelora {' '.join(path)}: {param.name} has no help"
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        options = _options_panel(result.output)
        assert "--help" in options, (path, result.output)
        assert "<bool>" not in options and "<list[" not in options, (path, options)


# --- 4. which users have samples in a split ---------------------------------------------------------------


def test_data_info_lists_the_users_with_samples_in_a_split(prepared, run_cli):
    from lifelora.data.prepared import PreparedData

    result = run_cli("data", "info", "ml-synthetic", "--data-dir", prepared, "--users", "test", "--json")
    assert result.code == 0, result.stderr
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    data = PreparedData.load(prepared)
    test = data.split("test")
    assert len(listed) == 20 and "next page: --offset 20" in result.stderr
    for row in listed:
        assert row["samples"] == test.filter(test["user_idx"] == data.user_index(row["user"])).height > 0
    n = test["user_idx"].n_unique()
    assert n < data.users.height  # some users have no test sample
    result = run_cli(
        "data", "info", "ml-synthetic", "--data-dir", prepared, "--users", "test", "--limit", "0"
    )
    assert result.code == 0 and f"users 1–{n} of {n}" in result.stdout and "next page" not in result.stderr
    result = run_cli("data", "info", "ml-synthetic", "--data-dir", prepared, "--users", "later")
    assert result.code == 2 and "unknown split 'later'" in result.error_lines[-1]


# --- 5. adapters name the embedded model's Hub id ---------------------------------------------------------


def test_embedded_backbone_adapters_name_its_hub_id(lifelora_home, tmp_path):
    from tiny_llm import save_tiny

    from lifelora.adapters import SharedLoraConfig, attach
    from lifelora.llm.backbone import load_backbone

    save_tiny(lifelora_home / "models" / "smollm2-135m")  # stands in for the converted GGUF
    backbone = load_backbone("smollm2-135m", log=lambda _: None)
    assert backbone.hub_id == backbone.base_model_name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    adapter = attach(backbone.model, SharedLoraConfig(target_modules=["q_proj"]))
    adapter.save(tmp_path / "lora")
    saved = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    adapter.unload()

    local = load_backbone(str(save_tiny(tmp_path / "tiny")), log=lambda _: None)
    assert local.hub_id is None and local.base_model_name == str(tmp_path / "tiny")
    adapter = attach(local.model, SharedLoraConfig(target_modules=["q_proj"]))
    adapter.save(tmp_path / "local-lora")
    saved = json.loads((tmp_path / "local-lora" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(tmp_path / "tiny")  # a user's own directory stays


# --- 7. a mistyped model name fails at once ----------------------------------------------------------------


def test_a_mistyped_model_name_is_one_line_at_once(prepared, run_cli):
    start = time.perf_counter()
    result = run_cli("retrieve", "ml-synthetic", "--data-dir", prepared, "--model", "smolm2-135m")
    assert time.perf_counter() - start < 30  # transformers alone retries for ~50 s without a network
    assert result.code == 2
    assert len(result.error_lines) == 1, result.stderr
    assert "model 'smolm2-135m' is not an embedded model" in result.error_lines[0]
    assert result.error_lines[0].endswith("did you mean smollm2-135m?")


def test_offline_mode_needs_the_model_in_the_cache(monkeypatch):
    from huggingface_hub import constants

    from lifelora.llm.backbone import check_hub_model

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LifeloraError, match="not in the Hugging Face cache \\(HF_HUB_OFFLINE is set\\)"):
        check_hub_model("lifelora-tests/no-such-model")
    with pytest.raises(LifeloraError, match="not a valid Hugging Face id"):
        check_hub_model("no such model")


# --- 8. and 9. run outcome, precision and the best epoch ----------------------------------------------------


def test_run_json_records_the_outcome_and_the_curve_marks_the_best_epoch(
    prepared, run_cli, tmp_path, monkeypatch
):
    import lifelora.report

    legends = []

    def keep_legends(figure, path):
        legends.extend(t.get_text() for a in figure.axes if a.get_legend() for t in a.get_legend().texts)
        return path

    monkeypatch.setattr(lifelora.report, "_save_png", keep_legends)
    args = ["lens", "train", "dataset=ml-synthetic", f"data_dir={prepared}", *LENS]
    result = run_cli(*args, "--run-dir", tmp_path / "ok")
    assert result.code == 0, result.stderr
    run = json.loads((tmp_path / "ok" / "run.json").read_text())
    assert run["status"] == "finished" and run["error"] is None and run["precision"] == "fp32"
    best = json.loads((tmp_path / "ok" / "metrics.json").read_text())["best_epoch"]
    assert legends == [f"best epoch {best}"] * 2  # both panels: train loss and valid AUC

    missing = tmp_path / "nowhere.safetensors"
    result = run_cli(*args, "kind=sim", f"history_index={missing}", "--run-dir", tmp_path / "failed")
    assert result.code == 2
    run = json.loads((tmp_path / "failed" / "run.json").read_text())
    assert run["status"] == "failed" and run["ended"]
    assert run["error"] and result.error_lines[-1] == f"lifelora: error: {run['error']}"


def test_a_run_stopped_by_sigterm_records_that_it_was_terminated(prepared, run_cli, tmp_path, monkeypatch):
    import signal

    import lifelora.cli.lens

    def stopped_by_the_scheduler(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(lifelora.cli.lens, "log", stopped_by_the_scheduler)
    args = ["lens", "train", "dataset=ml-synthetic", f"data_dir={prepared}", *LENS]
    result = run_cli(*args, "--run-dir", tmp_path / "stopped")
    assert result.code == 143 and result.error_lines[-1] == "lifelora: terminated"
    run = json.loads((tmp_path / "stopped" / "run.json").read_text())
    assert run["status"] == "failed" and run["error"] == "terminated" and run["ended"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_plot_curve_without_best_has_no_mark(tmp_path, monkeypatch):
    import lifelora.report

    figures = []
    monkeypatch.setattr(lifelora.report, "_save_png", lambda figure, path: figures.append(figure) or path)
    curve = [
        {"epoch": 1, "train_loss": 0.6, "valid_AUC": 0.6},
        {"epoch": 2, "train_loss": 0.5, "valid_AUC": 0.7},
    ]
    lifelora.report.plot_curve(curve, tmp_path / "c.png", "t")
    lifelora.report.plot_curve(curve, tmp_path / "c.png", "t", best=2)
    assert [a.get_legend() is None for a in figures[0].axes] == [True, True]
    assert [t.get_text() for t in figures[1].axes[1].get_legend().texts] == ["best epoch 2"]


def test_plot_lines_leaves_out_empty_series_and_panels_and_keeps_each_name_in_its_colour(
    tmp_path, monkeypatch
):
    import lifelora.report

    figures = []
    monkeypatch.setattr(lifelora.report, "_save_png", lambda figure, path: figures.append(figure) or path)
    nan = float("nan")
    many = {f"s{i}": [0.1 * i, 0.2] for i in range(11)}  # more names than tab10 has colours
    panels = [
        ("same", {**many, "none yet": [nan, nan]}),
        ("next", {"none": [nan, nan]}),
        ("late", {"s3": [1, 2]}),
    ]
    lifelora.report.plot_lines(panels, tmp_path / "p.png", "t", "period", dashed=("s0",))
    axes = figures[0].axes
    assert [a.get_ylabel() for a in axes] == ["same", "late"]
    first = {line.get_label(): line for line in axes[0].get_lines()}
    assert set(first) == set(many)
    assert len({line.get_color() for line in first.values()}) == 11
    assert axes[1].get_lines()[0].get_color() == first["s3"].get_color()
    assert first["s0"].get_linestyle() == "--" and first["s1"].get_linestyle() == "-"
    assert [t.get_text() for t in axes[1].get_legend().texts] == list(many)  # one legend, beside the last


# --- 10. the setup script says what it does -------------------------------------------------------------------


@pytest.mark.parametrize("has_torch", [True, False])
def test_setup_script_says_what_it_does(tmp_path, has_torch):
    """With a stand-in venv python that records its arguments: a line per stage, the same installs."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "setup.sh").write_text((ROOT / "scripts" / "setup.sh").read_text())
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    calls = tmp_path / "calls"
    torch_check = "" if has_torch else '[ "$1" = "-c" ] && exit 1\n'
    python.write_text(f'#!/bin/sh\n{torch_check}echo "$*" >> {calls}\n')
    python.chmod(0o755)
    env = {**os.environ, "TORCH_SPEC": ""}
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup.sh")], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("setup: ")]
    installs = [line for line in calls.read_text().splitlines() if "pip install" in line]
    assert said[0] == "setup: using the existing .venv" and said[-1].startswith("setup: done")
    assert installs[-1] == "-m pip install --quiet -e .[dev]"
    if has_torch:
        assert "setup: torch already installed" in said and len(installs) == 1
    else:
        assert any(line.startswith("setup: installing torch==2.13.0") for line in said)
        assert installs[0] == "-m pip install --quiet torch==2.13.0"
