"""`lifelora train / evaluate / recommend` on a tiny random model, and their bad-input errors."""

from __future__ import annotations

import json

import polars as pl
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
    recorded = json.loads((run / "run.json").read_text())
    assert {"command", "torch", "date"} <= set(recorded)
    assert recorded["status"] == "finished" and recorded["precision"] == "fp32"
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["train_samples"] == 32 and trained["subset_seed"] == 42 and trained["precision"] == "fp32"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoints").is_dir()

    result = run_cli("evaluate", "--run", run)
    assert result.code == 0, result.stderr
    again = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert again["metrics"]["test"]["AUC"] == pytest.approx(trained["metrics"]["test"]["AUC"], abs=1e-6)
    assert again["precision"] == "fp32"
    assert json.loads((run / "eval-test" / "run.json").read_text())["status"] == "finished"

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
    result = run_cli("export-user", run, "3", "--out", tmp_path / "user-3")
    assert result.code == 2 and "not a personalized one" in result.error_lines[-1]
    assert not (tmp_path / "user-3").exists()


def test_scoring_in_fp32_gives_the_same_scores_whatever_the_training_precision(setup, run_cli, tmp_path):
    """`eval.precision: fp32` scores as an all-fp32 run does, on a CPU with native bf16 or without."""
    config, _ = setup
    settings = {"fp32": [], "bf16-scored-fp32": ["train.precision=bf16", "eval.precision=fp32"]}
    for name, overrides in settings.items():
        result = run_cli("evaluate", "-c", config, "subset.eval=40", "--run-dir", tmp_path / name, *overrides)
        assert result.code == 0, result.stderr
    recorded = json.loads((tmp_path / "bf16-scored-fp32" / "metrics.json").read_text())
    assert (recorded["precision"], recorded["eval_precision"]) == ("bf16", "fp32")
    run = json.loads((tmp_path / "bf16-scored-fp32" / "run.json").read_text())
    assert (run["precision"], run["eval_precision"]) == ("bf16", "fp32")
    scores = [pl.read_parquet(tmp_path / name / "predictions_test.parquet")["score"] for name in settings]
    assert scores[0].equals(scores[1])


def test_retrieved_history_feeds_a_sim_lens(setup, run_cli, tmp_path):
    from safetensors.numpy import load_file

    _, model_dir = setup
    data_dir = tmp_path / "prepared"
    index = tmp_path / "sim-6.safetensors"
    args = ["--data-dir", data_dir, "--model", model_dir, "--k", "6", "--pca-dim", "8", "--out", index]
    result = run_cli("retrieve", "ml-synthetic", *args)
    assert result.code == 0, result.stderr
    positions = load_file(str(index))
    assert set(positions) == {"train", "valid", "test"} and positions["test"].shape[1] == 6
    result = run_cli(
        "lens",
        "train",
        "--run-dir",
        tmp_path / "sim",
        "dataset=ml-synthetic",
        f"data_dir={data_dir}",
        "kind=sim",
        f"history_index={index}",
        "model.history_length=6",
        "model.embed_dim=8",
        "model.mlp_units=[16]",
        "train.max_epochs=1",
    )
    assert result.code == 0, result.stderr
    assert (tmp_path / "sim" / "metrics.json").is_file()
    result = run_cli("retrieve", "ml-synthetic", "--data-dir", data_dir, "--retriever", "bm25")
    assert result.code == 2 and "unknown retriever 'bm25'" in result.error_lines[-1]


def test_resume_continues_from_the_latest_checkpoint(setup, run_cli, tmp_path):
    config, _ = setup
    run = tmp_path / "run"
    assert run_cli("train", "-c", config, "--run-dir", run).code == 0
    result = run_cli("train", "--resume", run)
    assert result.code == 0, result.stderr
    assert (run / "adapter" / "adapter_config.json").is_file()


def _tiny_lens(run_cli, tmp_path, data_dir, name="lens", *overrides) -> object:
    lens = tmp_path / name
    result = run_cli(
        "lens",
        "train",
        "--run-dir",
        lens,
        "dataset=ml-synthetic",
        f"data_dir={data_dir}",
        "model.history_length=6",
        "model.embed_dim=8",
        "model.mlp_units=[16]",
        "train.max_epochs=1",
        *overrides,
    )
    assert result.code == 0, result.stderr
    return lens


def test_personalized_adapter_trains_routed_by_a_lens_and_evaluates(setup, run_cli, tmp_path):
    config, _ = setup
    lens = _tiny_lens(run_cli, tmp_path, tmp_path / "prepared")
    run = tmp_path / "reclora"
    args = ["--adapter", "personalized", "--lens", lens, "adapter.n_loras=3", "adapter.temperature=1"]
    result = run_cli("train", "-c", config, "--run-dir", run, *args)
    assert result.code == 0, result.stderr
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["adapter"] == "personalized" and 0 <= trained["metrics"]["test"]["AUC"] <= 1
    saved = json.loads((run / "adapter" / "personalized_config.json").read_text())
    assert saved["config"]["n_loras"] == 3 and saved["config"]["routing_dim"] == 16
    result = run_cli("evaluate", "--run", run)
    assert result.code == 0, result.stderr
    again = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert again["metrics"]["test"]["AUC"] == pytest.approx(trained["metrics"]["test"]["AUC"], abs=1e-6)
    result = run_cli("recommend", "3", "--run", run)
    assert result.code == 2 and "personalized adapter" in result.error_lines[-1]


def test_export_user_writes_one_instance_as_a_peft_adapter(setup, run_cli, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lifelora.data.prepared import PreparedData

    config, model_dir = setup
    lens = _tiny_lens(run_cli, tmp_path, tmp_path / "prepared")
    run = tmp_path / "reclora"
    args = ["--adapter", "personalized", "--lens", lens, "adapter.n_loras=3", "subset.eval=8"]
    assert run_cli("train", "-c", config, "--run-dir", run, *args).code == 0
    data = PreparedData.load(tmp_path / "prepared")
    test = data.split("test")
    user = data.users["user"][int(test["user_idx"][0])]
    seen = set(test.filter(test["user_idx"] == test["user_idx"][0])["item_idx"].to_list())
    item = data.items["item"][int(test["item_idx"][0])]
    other = next(i for i in range(len(data.items)) if i not in seen)
    with_test = data.split_users("test")["user"]
    without = sorted(set(data.users["user"]) - set(with_test))[0]
    result = run_cli("export-user", run, user, "--item", item, "--out", tmp_path / "user")
    assert result.code == 0, result.stderr
    assert f"user {user}, test sample 0 (" in result.stdout
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), tmp_path / "user")
    assert peft_model.peft_config["default"].r == 8  # factors mixing: one rank-r LoRA per instance
    result = run_cli("export-user", run, user, "--out", tmp_path / "latest")
    assert result.code == 0 and (tmp_path / "latest" / "adapter_model.safetensors").is_file()

    cases = [
        (["no-such-user"], "user 'no-such-user' is not in"),
        ([user, "--item", "no-such-item"], "--item: 'no-such-item' is not an item"),
        ([user, "--item", data.items["item"][other]], "has no sample in the test split with target item"),
        ([user, "--split", "nonsense"], "--split: unknown split 'nonsense'"),
        ([without], f"user {without!r} has no sample in the test split; users with one: {with_test[0]}, "),
    ]
    for extra, message in cases:
        result = run_cli("export-user", run, *extra, "--out", tmp_path / "bad")
        assert result.code == 2 and message in result.error_lines[-1], result.stderr
        assert not (tmp_path / "bad").exists()


def test_personalized_adapter_bad_lens_and_settings(setup, run_cli, tmp_path):
    config, _ = setup
    other = tmp_path / "other"
    synthetic_prepared(other, name="ml-synthetic", seed=7)
    foreign_lens = _tiny_lens(run_cli, tmp_path, other, "foreign")
    lens = _tiny_lens(run_cli, tmp_path, tmp_path / "prepared")
    cases = [
        (["--adapter", "personalized"], "needs lens"),
        (["--adapter", "personalized", "--lens", tmp_path], "not a lens"),
        (["--adapter", "personalized", "--lens", foreign_lens], "trained on another dataset"),
        (["--adapter", "personalized", "--lens", foreign_lens, "adapter.n_loras=0"], "adapter.n_loras"),
        (
            ["--adapter", "personalized", "--lens", foreign_lens, "adapter.temperature=0"],
            "adapter.temperature",
        ),
        (
            ["--adapter", "personalized", "--lens", lens, "adapter.routing_dim=7"],
            "routing_dim is 7 but the routing vectors have 16",
        ),
    ]
    for args, message in cases:
        result = run_cli("train", "-c", config, *args)
        assert result.code == 2, (args, result.stderr)
        assert message in result.error_lines[-1], (args, result.error_lines[-1])


def test_reclora_experiment_writes_the_table_and_skips_finished_variants(setup, run_cli, tmp_path):
    config, _ = setup
    lens = _tiny_lens(run_cli, tmp_path, tmp_path / "prepared")
    out = tmp_path / "experiment"
    args = ["experiment", "reclora", "-c", config, "--lens", lens, "--out", out]
    args += ["--n-loras", "1,2", "--temperatures", "1", "--sizes", "16"]
    args += ["adapter.kind=personalized", "adapter.n_loras=2", "adapter.temperature=5"]
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    rows = json.loads((out / "results.json").read_text())
    assert list(rows) == [
        "lens alone (lens)",
        "zero-shot",
        "shared LoRA (32 samples)",
        "RecLoRA N=2, T=5 (32 samples)",
        "RecLoRA N=2, T=5, recent-K text history",
        "RecLoRA N=2, T=5, uniform routing (no lens)",
        "RecLoRA N=1, T=5",
        "RecLoRA N=2, T=1",
        "shared LoRA (16 samples)",
        "RecLoRA N=2, T=5 (16 samples)",
    ]
    assert all(row["samples"] == 60 for row in rows.values())
    assert (out / "results.png").is_file() and "| RecLoRA N=1, T=5 |" in (out / "results.md").read_text()
    uniform = yaml.safe_load((out / "reclora-n-2-t-5-uniform-routing-no-lens" / "config.yaml").read_text())
    assert uniform["adapter"]["routing"] == "uniform"
    before = (out / "zero-shot" / "metrics.json").stat().st_mtime_ns
    assert run_cli(*args).code == 0  # finished variants are read back, not rerun
    assert (out / "zero-shot" / "metrics.json").stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text()) == rows
    result = run_cli(*args, "--only", "no-such-row")
    assert result.code == 2 and "--only: 'no-such-row' matches no variant" in result.error_lines[-1]
    result = run_cli("experiment", "reclora", "-c", config, "--out", out)
    assert result.code == 2 and "personalized-adapter config" in result.error_lines[-1]
    result = run_cli(*args, "--sizes", "ten")
    assert result.code == 2 and "--sizes" in result.error_lines[-1]


def test_reclora_experiment_adds_a_row_per_other_lens(setup, run_cli, tmp_path):
    config, _ = setup
    lens = _tiny_lens(run_cli, tmp_path, tmp_path / "prepared")
    other = _tiny_lens(run_cli, tmp_path, tmp_path / "prepared", "sim", "train.seed=7")
    out = tmp_path / "experiment"
    args = ["experiment", "reclora", "-c", config, "--lens", lens, "--out", out, "--only", "zero-shot"]
    args += ["adapter.kind=personalized"]
    result = run_cli(*args, "--also-lens", other)
    assert result.code == 0, result.stderr
    rows = json.loads((out / "results.json").read_text())
    assert list(rows) == ["lens alone (lens)", "lens alone (sim)", "zero-shot"]
    assert rows["lens alone (lens)"] != rows["lens alone (sim)"]
    result = run_cli(*args, "--also-lens", lens)
    assert result.code == 2 and "--also-lens: two lens run directories share a name" in result.error_lines[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "-c", "{config}", "model={tmp}/nowhere"], "model directory not found"),
        (["train", "-c", "{config}", "model={tmp}"], "not a model directory (no config.json)"),
        (["train", "-c", "{config}", "model=smolm2-135m"], "did you mean smollm2-135m?"),
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


def test_two_process_cpu_training_through_accelerate(setup, tmp_path):
    """The multi-process path (DDP over gloo, as `accelerate launch`/`torchrun` start it) on a CPU."""
    import os
    import subprocess
    import sys

    config, _ = setup
    run = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
    ]
    command += ["-m", "lifelora", "train", "-c", str(config), "--run-dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["train"]["processes"] == 2
    assert summary["train"]["steps"] == 1  # 32 samples / (8 per process × 2 processes × 2 accumulation)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def _processes(count: int, args: list, port: int) -> None:
    """`lifelora ARGS` in `count` processes (torchrun) or in one plain process, one thread each."""
    import os
    import subprocess
    import sys

    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(count), "--master_port", str(port)]
    command = [sys.executable, *(launcher if count > 1 else []), "-m", "lifelora", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_two_process_evaluation_equals_one_process(setup, run_cli, tmp_path):
    """Evaluation rows sharded over two processes (gloo) and gathered: the same predictions, bit for bit."""
    import polars as pl

    config, _ = setup
    trained = tmp_path / "trained"
    assert run_cli("train", "-c", config, "--run-dir", trained).code == 0
    for count, port in ((1, 0), (2, 29541)):
        _processes(
            count, ["evaluate", "--trained-run", trained, "--run-dir", tmp_path / f"eval-{count}"], port
        )
    one = pl.read_parquet(tmp_path / "eval-1" / "predictions_test.parquet")
    two = pl.read_parquet(tmp_path / "eval-2" / "predictions_test.parquet")
    assert one.height == 60 and one.equals(two)
    metrics = [json.loads((tmp_path / f"eval-{n}" / "metrics.json").read_text()) for n in (1, 2)]
    assert metrics[0]["metrics"]["test"]["AUC"] == metrics[1]["metrics"]["test"]["AUC"]


def test_two_process_lens_evaluation_and_export_equal_one_process(setup, run_cli, tmp_path):
    import shutil

    import polars as pl
    from safetensors.torch import load_file

    data_dir = tmp_path / "prepared"
    lens = _tiny_lens(run_cli, tmp_path, data_dir, "lens", "train.eval_batch_size=16")  # several batches
    for count, port in ((1, 0), (2, 29547)):
        common = ["--data-dir", data_dir, "--split", "test"]
        _processes(count, ["lens", "evaluate", lens, *common], port)
        shutil.move(lens / "predictions_test.parquet", tmp_path / f"lens-{count}.parquet")
        _processes(count, ["lens", "export", lens, *common, "--out", tmp_path / f"hidden-{count}.st"], port)
    one, two = (pl.read_parquet(tmp_path / f"lens-{n}.parquet") for n in (1, 2))
    assert one.height > 0 and one.equals(two)
    hidden = [load_file(str(tmp_path / f"hidden-{n}.st")) for n in (1, 2)]
    for key in ("hidden", "sample_id"):
        assert hidden[0][key].shape == hidden[1][key].shape and hidden[0][key].equal(hidden[1][key]), key
