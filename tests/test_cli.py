import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lifelora(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 1200
) -> subprocess.CompletedProcess:
    """The command in a subprocess; the timeout allows for 2 cores shared with other jobs (the quick
    demo and benchmarks take 1–5 minutes quiet)."""
    return subprocess.run(
        [sys.executable, "-m", "lifelora", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["data"],
        ["data", "fetch"],
        ["data", "prepare"],
        ["data", "info"],
        ["lens"],
        ["lens", "train"],
        ["lens", "evaluate"],
        ["lens", "export"],
        ["bench"],
        ["experiment", "reclora"],
        ["experiment", "next-item"],
        ["demo"],
        ["serve"],
        ["update"],
        ["versions"],
        ["versions", "list"],
        ["versions", "activate"],
        ["versions", "rollback"],
        ["bench", "serve"],
    ],
    ids=lambda c: " ".join(c) or "lifelora",
)
def test_every_command_has_help(command, run_cli):
    result = run_cli(*command, "--help")  # in-process: a subprocess per command costs ~2 s of imports
    assert result.code == 0, result.stderr
    assert "Usage" in result.stdout


def test_the_module_entry_point_prints_help():
    result = lifelora("--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = "bash scripts/setup.sh && bash scripts/test.sh"
    assert test_command in readme
    assert test_command in ci
    assert "bash scripts/setup.sh && .venv/bin/lifelora demo" in readme


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """The working directory, cache and runs of a fresh user, for in-process commands."""
    monkeypatch.chdir(tmp_path)
    for name, value in _env(tmp_path).items():
        monkeypatch.setenv(name, value)
    return tmp_path


def test_lens_train_on_unprepared_data_is_a_clear_error(in_tmp, run_cli):
    result = run_cli("lens", "train", "dataset=ml-25m")
    assert result.code == 2
    assert len(result.error_lines) == 1
    assert "not prepared yet" in result.stderr and "lifelora data prepare ml-25m" in result.stderr


def test_experiment_next_item_with_evaluations_further_apart_than_its_budget_is_a_clear_error(
    in_tmp, run_cli
):
    result = run_cli("experiment", "next-item", "--minutes", "5", "--every", "10")
    assert result.code == 2 and len(result.error_lines) == 1
    assert "--every (10) must not exceed --minutes (5)" in result.stderr
    assert not (in_tmp / "runs").exists()  # nothing half-written


def test_lens_train_bad_override_is_a_clear_error(in_tmp, run_cli):
    result = run_cli("lens", "train", "train.lr=fast")
    assert result.code == 2
    assert "train.lr" in result.stderr
    assert not (in_tmp / "runs").exists()


def test_unknown_benchmark_is_a_clear_error(in_tmp, run_cli):
    result = run_cli("bench", "nope")
    assert result.code == 2
    assert "unknown benchmark 'nope'" in result.stderr


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "LIFELORA_HOME": str(tmp_path / "home"), "LIFELORA_RUNS": str(tmp_path / "runs")}


@pytest.mark.integration
def test_demo_quick_prints_the_comparison_table(tmp_path):
    wide = {**os.environ, "COLUMNS": "200"}  # pytest's children see COLUMNS=80, which wraps row names
    result = lifelora(
        "demo", "--quick", "--run-dir", str(tmp_path / "demo"), cwd=tmp_path, env=wide, timeout=1800
    )
    assert result.returncode == 0, result.stderr
    assert "DIN w/o history ratings" in result.stdout and "zero-shot" in result.stdout
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())
    paired = rows.pop("RecLoRA vs shared LoRA")
    assert set(rows) == {
        "DIN",
        "DIN w/o history ratings",
        "DIN (same rows)",
        "smollm2-135m zero-shot",
        "smollm2-135m + shared LoRA (8 train samples)",
        "smollm2-135m + RecLoRA, DIN-routed (8 train samples)",
    }
    for name in ("DIN", "DIN w/o history ratings"):
        assert 0.5 < rows[name]["AUC"] < 1.0
    for values in rows.values():  # every AUC with its DeLong 95% interval
        assert values["AUC_low"] <= values["AUC"] <= values["AUC_high"]
    assert paired["low"] <= paired["difference"] <= paired["high"] and 0 <= paired["p_value"] <= 1
    assert "RecLoRA − shared LoRA AUC" in result.stderr
    assert (tmp_path / "demo" / "results.png").is_file()
    assert rows["DIN (same rows)"]["samples"] == rows["smollm2-135m zero-shot"]["samples"] == 24
    assert (tmp_path / "demo" / "din" / "lens" / "model.safetensors").is_file()
    assert (tmp_path / "demo" / "shared-lora" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "demo" / "reclora" / "adapter" / "personalized_config.json").is_file()
    assert rows["smollm2-135m + RecLoRA, DIN-routed (8 train samples)"]["samples"] == 24


@pytest.mark.integration
def test_continual_demo_quick_prints_the_table_the_verdict_and_resumes(tmp_path):

    wide = {**os.environ, "COLUMNS": "200"}
    run = tmp_path / "continual"
    args = ("demo", "--continual", "--quick", "--run-dir", str(run))
    result = lifelora(*args, cwd=tmp_path, env=wide, timeout=1800)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "results.json").read_text())
    assert list(summary["strategies"]) == ["pretrain", "finetune", "peso"]
    for strategy in summary["strategies"].values():
        assert strategy["mean"]["periods_done"] == 3 and 0.0 <= strategy["mean"]["ndcg@10"] <= 1.0
    verdict = json.loads((run / "verdict.json").read_text())
    assert "single evolving LoRA" in verdict["sentence"] and "proximal gradient" in verdict["proximal"]
    assert "peso" in result.stdout and (run / "results.png").is_file()
    again = lifelora(*args, cwd=tmp_path, env=wide, timeout=1800)  # every period done: nothing retrains
    assert again.returncode == 0 and "training a lora adapter" not in again.stderr


def _ratios(figures):
    if isinstance(figures, dict):
        if "pairs" in figures:
            yield figures
        for value in figures.values():
            yield from _ratios(value)


@pytest.mark.integration
@pytest.mark.parametrize(
    "name",
    [
        "prepare",
        "lens",
        "scoring",
        "ranking",
        "train-step",
        "train-layout",
        "personalized",
        "decoding",
        "continual",
    ],
)
def test_quick_benchmarks_print_json_and_append_results(tmp_path, name):
    results = tmp_path / "results"
    runs = 2 if name == "prepare" else 1  # appending is checked once; the LLM ones take ~a minute each
    for _ in range(runs):
        result = lifelora("bench", name, "--quick", "--results-dir", str(results), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {
        "prepare": {"seconds", "peak_rss_gb"},
        "lens": {"samples_per_s", "auc", "logloss", "precision", "bf16_vs_fp32_step_time"},
        "scoring": {"speedup", "fp32", "bf16", "bf16_vs_fp32_time", "matmul_peak_bf16_gflops"},
        "ranking": {"speedup", "max_abs_diff", "precision"},
        "train-step": {"fp32", "bf16", "bf16_vs_fp32_time", "peak_rss_gb"},
        "train-layout": {
            "targets_per_s_sequence",
            "targets_per_s_prompt",
            "speedup",
            "per_target_time_ratio",
        },
        "personalized": {"precisions", "fp32", "bf16", "targets"},
        "decoding": {"users_per_s", "trie_share", "speedup_vs_prefix_fn", "exact_vs_beam_time"},
        "continual": {"peso_step_ratio_softmax_kl", "peso_step_ratio_l2", "peso_extra_mb", "precision"},
    }[name]
    assert expected <= set(figures)
    assert set(figures["load_avg_1m"]) == {"start", "end"}
    for ratio in _ratios(figures):  # every comparison: median of alternated pairs, with its spread
        assert ratio["ratio_min"] <= ratio["ratio"] <= ratio["ratio_max"] and ratio["pairs"] >= 1
    history = json.loads((results / f"{name}.json").read_text())
    assert len(history) == runs
    if name == "ranking":
        assert figures["max_abs_diff"] <= 1e-4
    if name == "personalized":
        targets = {
            "layer_ratio_vs_shared",
            "step_ratio_vs_shared",
            "scoring_ratio_vs_shared",
            "speedup_vs_loop",
            "speedup_vs_loop_products",
        }
        for precision in figures["precisions"]:  # fp32, and bf16 where it is native
            assert targets <= set(figures[precision]) and targets == set(figures["targets"][precision])
        # both batched mixtures compute the loop's outputs
        assert figures["fp32"]["loop_max_abs_diff"] <= 1e-4
    assert {"command", "machine", "date", "figures"} <= set(history[-1])
    assert history[-1]["command"] == f"lifelora bench {name} --quick"
