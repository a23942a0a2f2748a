"""`lifelora train / evaluate / recommend` on a tiny random model, and their bad-input errors."""

from __future__ import annotations

import json

import pytest
import yaml
from synthetic import synthetic_prepared
from tiny_llm import save_tiny


@pytest.fixture
def setup(tmp_path, lifelora_home, monkeypatch):
    monkeypatch.setenv("LIFELORA_RUNS", str(tmp_path / "runs"))
    data_dir = tmp_path / "prepared"
    synthetic_prepared(data_dir, name="ml-synthetic")
    model_dir = save_tiny(tmp_path / "tiny")
    config = tmp_path / "lora.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": "ml-synthetic",
                "data_dir": str(data_dir),
                "model": str(model_dir),
                "prompt": {"history": 4, "pca_dim": 8},
                "subset": {"train": 32, "eval": 60},
                "train": {"batch_size": 8, "grad_accum": 2, "checkpoint_every": 1, "precision": "fp32"},
            }
        )
    )
    return config, model_dir


def test_train_evaluate_and_recommend(setup, run_cli, tmp_path):
    config, _ = setup
    run = tmp_path / "run"
    result = run_cli("train", "-c", config, "--run-dir", run, "train.lr=2e-3")
    assert result.code == 0, result.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == pytest.approx(2e-3)
    assert {"command", "torch", "date"} <= set(json.loads((run / "run.json").read_text()))
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["train_samples"] == 32 and trained["subset_seed"] == 42
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoints").is_dir()

    result = run_cli("evaluate", "--run", run)
    assert result.code == 0, result.stderr
    again = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert again["metrics"]["test"]["AUC"] == pytest.approx(trained["metrics"]["test"]["AUC"], abs=1e-6)

    result = run_cli("evaluate", "-c", config, "subset.eval=40")
    assert result.code == 0, result.stderr
    assert "zero-shot" in result.stdout

    result = run_cli("recommend", "3", "--run", run, "--k", "4", "--candidates", "10", "--json")
    assert result.code == 0, result.stderr
    ranked = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert ranked[0]["score"] >= ranked[-1]["score"]
    result = run_cli("recommend", "3", "-c", config, "--items", "1,2,3", "--k", "2")
    assert result.code == 0, result.stderr
    assert "top 2 of 3 for user 3" in result.stdout


def test_resume_continues_from_the_latest_checkpoint(setup, run_cli, tmp_path):
    config, _ = setup
    run = tmp_path / "run"
    assert run_cli("train", "-c", config, "--run-dir", run).code == 0
    result = run_cli("train", "--resume", run)
    assert result.code == 0, result.stderr
    assert (run / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "-c", "{config}", "model={tmp}/nowhere"], "model directory not found"),
        (["train", "-c", "{config}", "model={tmp}"], "not a model directory (no config.json)"),
        (["train", "-c", "{config}", "prompt.retriever=bm25"], "prompt.retriever"),
        (["train", "-c", "{config}", "adapter.target_modules=[nothing_here]"], "adapter.target_modules"),
        (["train", "-c", "{config}", "adapter.r=0"], "adapter.r"),
        (["train", "-c", "{config}", "adapter=null"], "use `lifelora evaluate`"),
        (["train", "-c", "{config}", "subset.train=0"], "subset.train"),
        (["train", "-c", "{config}", "train.precision=fp8"], "train.precision"),
        (["train", "--resume", "{tmp}"], "not a run directory"),
        (["evaluate", "--run", "{tmp}"], "not a trained run"),
        (["recommend", "no-such-user", "-c", "{config}"], "user 'no-such-user' is not in ml-synthetic"),
        (["recommend", "3", "-c", "{config}", "--items", "1,999"], "--items: '999' is not an item"),
    ],
)
def test_bad_input_is_one_clear_line(setup, run_cli, tmp_path, args, message):
    config, _ = setup
    filled = [a.format(config=config, tmp=tmp_path) for a in args]
    result = run_cli(*filled)
    assert result.code == 2, result.stderr
    errors = [line for line in result.error_lines if line.startswith("lifelora: error: ")]
    assert len(errors) == 1 and errors[0] == result.error_lines[-1], result.stderr
    assert message in errors[0]
