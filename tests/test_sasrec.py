import math

import numpy as np
import polars as pl
import pytest
import torch
from synthetic import rule_prepared, synthetic_prepared

from lifelora.config import SHIPPED_CONFIGS, load_config
from lifelora.data.sequential import NextItemSamples, leave_one_out
from lifelora.errors import LifeloraError
from lifelora.lens.popularity import run_popularity, training_item_counts
from lifelora.lens.sasrec import SASRec, SASRecLens
from lifelora.lens.sasrec.config import SASRecConfig, SASRecModelConfig
from lifelora.lens.sasrec.train import UserSequences, sasrec_loss, train_sasrec

SMALL = {
    "dataset": "pattern",
    "model": {"max_len": 12, "hidden": 16, "blocks": 1, "heads": 2, "dropout": 0.0},
    "train": {"lr": 1e-2, "batch_size": 16, "epochs": 25, "patience": 25, "compile": False, "seed": 1},
    "eval": {"ks": [1, 10], "top_k": 10},
}


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    return rule_prepared(tmp_path_factory.mktemp("prepared") / "pattern")


@pytest.fixture(scope="module")
def trained(pattern, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sasrec-run")
    result = train_sasrec(SASRecConfig.model_validate(SMALL), pattern, run_dir, log=lambda _: None)
    return run_dir, result


def test_outputs_at_a_position_ignore_later_items():
    torch.manual_seed(0)
    model = SASRec(SASRecModelConfig(max_len=10, hidden=16, heads=2, dropout=0.0), n_items=50).eval()
    ids = torch.randint(1, 51, (3, 10))
    ids[0, :4] = 0  # left padding
    changed = ids.clone()
    changed[:, 6:] = torch.randint(1, 51, (3, 4))
    with torch.no_grad():
        before, after = model(ids), model(changed)
    assert torch.allclose(before[:, :6], after[:, :6], atol=1e-6)
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_packed_rows_give_each_user_its_own_outputs(data):
    users = UserSequences(data, max_len=60)
    batch = users.collate(list(range(len(users))))
    assert batch["ids"].shape[0] < len(users)  # several users share a row
    torch.manual_seed(0)
    model = SASRec(SASRecModelConfig(max_len=60, hidden=16, dropout=0.0), data.items.height).eval()
    with torch.no_grad():
        packed = model(batch["ids"], batch["positions"], batch["segments"])
        for user in range(len(users)):
            n = users.inputs[user]
            alone = torch.zeros(1, 60, dtype=torch.long)
            alone[0, 60 - n :] = torch.from_numpy(users.windows[user, -(n + 1) : -1])
            expected = model(alone)[0, 60 - n :]
            assert torch.allclose(packed[batch["segments"] == user], expected, atol=1e-5)
    flat_ids = batch["ids"].flatten()
    assert len(batch["targets"]) == int(users.inputs.sum()) == len(batch["targets_at"])
    assert (flat_ids[batch["targets_at"]] > 0).all()


def test_untrained_cross_entropy_is_about_log_n_items(data):
    torch.manual_seed(0)
    lens = SASRecLens.create(SASRecConfig.model_validate(SMALL), data)
    users = UserSequences(data, max_len=12)
    loss = sasrec_loss("ce", compile=False)(lens.model.eval(), users.collate(list(range(len(users)))))
    assert loss.item() == pytest.approx(math.log(data.items.height), abs=0.05)


def test_bce_loss_samples_negatives_other_than_the_target(data):
    torch.manual_seed(0)
    users = UserSequences(data, max_len=12, negatives=True)
    batch = users.collate(list(range(len(users))))
    assert (batch["negatives"] != batch["targets"]).all()
    assert batch["negatives"].max() < data.items.height
    lens = SASRecLens.create(SASRecConfig.model_validate(SMALL), data)
    loss = sasrec_loss("bce", compile=False)(lens.model, batch)
    assert loss.item() == pytest.approx(2 * math.log(2), abs=0.05)


def test_training_learns_the_next_item_pattern(trained):
    _, result = trained
    # item i is always followed by i+1: a working SASRec puts the target first; popularity is near 1/3
    assert result["metrics"]["test"]["all_items"]["hit@10"] > 0.95
    assert result["metrics"]["test"]["seen_removed"]["ndcg@10"] > 0.8
    assert 1 <= result["best_epoch"] <= result["epochs_run"]
    assert result["epoch_s"] > 0


def test_run_directory_holds_the_lens_metrics_and_ranked_lists(trained, pattern):
    run_dir, result = trained
    for name in ("lens/model.safetensors", "lens/sasrec.json", "metrics.json", "curve.json", "curve.png"):
        assert (run_dir / name).is_file(), name
    ranked = pl.read_parquet(run_dir / "ranked_test.parquet")
    assert ranked.height == len(leave_one_out(pattern, "test"))
    assert ranked["top_k"].to_numpy().shape == (ranked.height, 10)
    hit = (ranked["rank"] < 10).mean()
    assert hit == pytest.approx(result["metrics"]["test"]["all_items"]["hit@10"])
    assert set(result["metrics"]["test"]) == {"all_items", "seen_removed"}
    assert {"hit@10", "ndcg@10", "recall@10", "mrr", "users"} <= set(result["metrics"]["test"]["all_items"])


def test_save_and_load_give_identical_scores(trained, pattern, tmp_path):
    run_dir, _ = trained
    lens = SASRecLens.load(run_dir)
    samples = leave_one_out(pattern, "test")
    lens.save(tmp_path / "copy")
    again = SASRecLens.load(tmp_path / "copy")
    assert np.array_equal(lens.scores(pattern, samples), again.scores(pattern, samples))


def test_user_vectors_and_cold_start(trained, pattern):
    lens = SASRecLens.load(trained[0])
    samples = leave_one_out(pattern, "test")
    vectors = lens.routing(pattern, samples)
    assert vectors.shape == (len(samples), 16) and vectors.dtype == torch.float32
    cold = NextItemSamples("cold", np.array([0, 1]), np.array([0, 0]), np.array([0, 0]))
    cold_vectors = lens.routing(pattern, cold)
    assert torch.isfinite(cold_vectors).all()
    assert torch.equal(cold_vectors[0], cold_vectors[1])  # one defined vector for every cold user
    with torch.no_grad():
        padding_only = lens.model(torch.zeros(1, lens.config.model.max_len, dtype=torch.long))[0, -1]
    assert torch.allclose(cold_vectors[0], padding_only)


def test_loading_checks_the_dataset(trained, data, tmp_path):
    lens = SASRecLens.load(trained[0])
    with pytest.raises(LifeloraError, match="trained on another dataset"):
        lens.routing(data, leave_one_out(data, "test"))
    with pytest.raises(LifeloraError, match="not a SASRec lens"):
        SASRecLens.load(tmp_path)


def test_popularity_counts_exclude_the_held_out_items(data, tmp_path):
    counts = training_item_counts(data)
    expected = np.zeros(data.items.height, np.int64)
    items = data.sequences["item_idx"].to_numpy()
    for offset, length in data.users.select("seq_offset", "seq_len").iter_rows():
        np.add.at(expected, items[offset : offset + length - 2], 1)
    assert np.array_equal(counts, expected)
    assert counts.sum() == data.sequences.height - 2 * data.users.height
    result = run_popularity(data, tmp_path, ks=(10,), top_k=5)
    assert {"config.yaml", "metrics.json", "ranked_valid.parquet", "ranked_test.parquet"} <= {
        p.name for p in tmp_path.iterdir()
    }
    ranked = pl.read_parquet(tmp_path / "ranked_test.parquet")
    assert ranked["top_k"][0].to_list() == np.argsort(-counts, kind="stable")[:5].tolist()
    test = result["metrics"]["test"]
    assert test["seen_removed"]["hit@10"] >= test["all_items"]["hit@10"]


@pytest.mark.parametrize("name", ["sasrec-ml1m.yaml", "sasrec-ml100k.yaml"])
def test_shipped_configs_parse(name):
    config = load_config(SASRecConfig, SHIPPED_CONFIGS / "lens" / name)
    assert config.kind == "sasrec" and config.train.loss == "ce"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.loss=mse"], "train.loss"),
        (["model.heads=3"], "heads"),
        (["model.max_len=0"], "model.max_len"),
        (["train.patiense=3"], "did you mean train.patience"),
        (["kind=din"], "kind"),
    ],
)
def test_bad_config_is_a_clear_error(overrides, message):
    with pytest.raises(LifeloraError, match=message):
        load_config(SASRecConfig, None, overrides)


def test_cli_trains_sasrec_and_runs_popularity(run_cli, pattern, tmp_path):
    overrides = [f"data_dir={pattern.directory}", "dataset=pattern", *_flat(SMALL), "train.epochs=2"]
    result = run_cli(
        "lens", "train", "-c", "configs/lens/sasrec-ml100k.yaml", "--run-dir", tmp_path / "s", *overrides
    )
    assert result.code == 0, result.stderr
    assert (tmp_path / "s" / "ranked_test.parquet").is_file()
    assert "ndcg@10" in result.stdout
    result = run_cli(
        "lens", "popularity", "pattern", "--data-dir", pattern.directory, "--run-dir", tmp_path / "p"
    )
    assert result.code == 0, result.stderr
    assert (tmp_path / "p" / "metrics.json").is_file()


def test_cli_bad_input_is_one_line(run_cli, lifelora_home):
    result = run_cli("lens", "train", "-c", "configs/lens/sasrec-ml100k.yaml", "model.heads=3")
    assert result.code == 2 and len(result.error_lines) == 1
    assert "heads" in result.error_lines[0]
    result = run_cli("lens", "popularity", "ml-25m")
    assert result.code == 2 and len(result.error_lines) == 1
    assert "not prepared yet" in result.error_lines[0]


def _flat(tree: dict) -> list[str]:
    return [
        f"{section}.{key}={value}"
        for section, values in tree.items()
        if isinstance(values, dict)
        for key, value in values.items()
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_prepared(tmp_path_factory.mktemp("prepared") / "synthetic")
