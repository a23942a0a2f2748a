from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file
from synthetic import synthetic_prepared

from lifelora.errors import LifeloraError
from lifelora.lens import DINLens, LensConfig
from lifelora.lens.din.train import evaluate_split, export_hidden, fit, train_lens

SMALL = {
    "dataset": "synthetic",
    "model": {
        "embed_dim": 8,
        "history_length": 10,
        "attention_units": [16],
        "mlp_units": [32, 16],
        "dropout": 0.0,
    },
    "train": {"lr": 1e-2, "batch_size": 64, "max_epochs": 10, "patience": 3, "seed": 3},
}


def small_config(**changes) -> LensConfig:
    tree = {key: (dict(value) if isinstance(value, dict) else value) for key, value in SMALL.items()}
    for key, value in changes.items():
        section, _, leaf = key.rpartition(".")
        (tree[section] if section else tree)[leaf] = value
    return LensConfig.model_validate(tree)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_prepared(tmp_path_factory.mktemp("prepared") / "synthetic")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lens-run")
    result = train_lens(small_config(), data, run_dir, log=lambda _: None)
    return run_dir, result


def test_default_lens_exposes_a_256_d_hidden_vector(data):
    lens = DINLens.create(LensConfig(dataset="synthetic"), data)
    encoded = lens.encode(data, "valid")
    logits, hidden = lens.model(encoded.batch(torch.arange(5)))
    assert logits.shape == (5,)
    assert hidden.shape == (5, 256)


def test_training_learns_the_synthetic_preference(trained):
    _, result = trained
    # Users like one genre (90% consistent labels): a working lens separates that well; chance is 0.5.
    assert result["metrics"]["test"]["AUC"] > 0.75
    assert result["metrics"]["valid"]["AUC"] > 0.75
    assert 1 <= result["best_epoch"] <= result["epochs_run"]


def test_run_directory_holds_safetensors_checkpoint_metrics_and_predictions(trained):
    run_dir, _ = trained
    for name in (
        "lens/model.safetensors",
        "lens/lens.json",
        "metrics.json",
        "curve.json",
        "predictions_test.parquet",
    ):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*.pt")) and not list(run_dir.rglob("*.pkl"))


def test_saved_lens_reloads_to_identical_predictions(trained, data):
    run_dir, result = trained
    lens = DINLens.load(run_dir)
    metrics = evaluate_split(lens, data, "test", run_dir)
    assert metrics["AUC"] == pytest.approx(result["metrics"]["test"]["AUC"], abs=1e-12)


def test_same_seed_gives_the_same_weights(data, tmp_path):
    config = small_config(**{"train.max_epochs": 1})
    first, _ = fit(config, data, tmp_path / "a", log=lambda _: None)
    second, _ = fit(config, data, tmp_path / "b", log=lambda _: None)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key


def test_export_hidden_vectors_for_a_split(trained, data, tmp_path):
    run_dir, _ = trained
    lens = DINLens.load(run_dir)
    path = export_hidden(lens, data, "test", tmp_path / "hidden" / "test.safetensors")
    tensors = load_file(str(path))
    test = data.split("test")
    assert tensors["hidden"].shape == (test.height, 16)
    assert torch.equal(tensors["sample_id"], torch.from_numpy(test["sample_id"].to_numpy()))


def test_unseen_user_gets_the_cold_start_vector(trained, data):
    """A user unknown to the lens is encoded with code 0, whose embedding is zero and never trained."""
    lens = DINLens.load(trained[0])
    encoded = lens.encode(data, "test")
    batch = encoded.batch(torch.arange(4))
    assert torch.count_nonzero(lens.model.user_embeddings[0].weight[0]) == 0
    cold = batch.user_fields.clone()
    cold[:, 0] = 0
    with torch.no_grad():
        lens.model.eval()
        warm_hidden = lens.model.hidden(batch)
        batch.user_fields = cold
        cold_hidden = lens.model.hidden(batch)
        batch.user_fields = cold.clone()
        again = lens.model.hidden(batch)
    assert not torch.allclose(warm_hidden, cold_hidden)
    assert torch.equal(cold_hidden, again)


def test_users_first_seen_after_training_are_unknown(tmp_path):
    data = synthetic_prepared(tmp_path / "d", late_users=4)
    lens = DINLens.create(small_config(), data)
    train_users = set(data.split("train")["user_idx"].to_list())
    test = data.split("test")
    assert not set(test["user_idx"].to_list()) <= train_users
    codes = lens.encoder.user_table(data)[test["user_idx"].to_numpy(), 0]
    for user, code in zip(test["user_idx"].to_list(), codes, strict=True):
        assert (code == 0) == (user not in train_users)


def test_ablation_without_ratings_has_no_rating_embedding(data):
    lens = DINLens.create(small_config(**{"model.use_ratings": False}), data)
    assert not hasattr(lens.model, "rating_embedding")
    lens_with = DINLens.create(small_config(), data)
    assert hasattr(lens_with.model, "rating_embedding")


def test_history_by_all_item_fields_learns_and_reads_the_history_genres(data, tmp_path):
    result = train_lens(small_config(**{"model.history_fields": "all"}), data, tmp_path, log=lambda _: None)
    assert result["metrics"]["test"]["AUC"] > 0.75
    lens = DINLens.load(tmp_path)
    assert lens.model.history_proj[0].in_features == 8 * 4  # id, genre, decade, rating
    batch = lens.encode(data, "test").batch(torch.arange(16))
    base = lens.model.hidden(batch)
    batch.history_items[..., 1] = torch.where(batch.history_mask, 1, 0)  # every history genre → one
    assert not torch.allclose(lens.model.hidden(batch), base)


def _write_index(data, path: Path, k: int = 5, future: bool = False) -> Path:
    """Most recent k positions, per split, as a retriever would write them (time order, -1 padded)."""
    tensors = {}
    for split in ("train", "valid", "test"):
        hist_len = data.split(split)["hist_len"].to_numpy()
        positions = hist_len[:, None] - k + np.arange(k)[None, :]
        positions = np.where(positions >= 0, positions, -1)
        if future:
            positions[0, -1] = hist_len[0]
        tensors[split] = torch.from_numpy(positions.astype(np.int32))
    save_file(tensors, str(path))
    return path


def test_sim_reads_a_precomputed_history_index(data, tmp_path):
    index = _write_index(data, tmp_path / "index.safetensors")
    config = small_config(kind="sim", history_index=str(index), **{"train.max_epochs": 1})
    lens, _ = fit(config, data, tmp_path / "run", log=lambda _: None)
    encoded = lens.encode(data, "test")
    recent = data.recent_history(data.split("test"), 5)
    assert encoded.batch(torch.arange(3)).history_mask.shape == (3, 5)
    assert np.array_equal(encoded._history_mask.numpy(), recent.mask)
    test, valid = data.split("test"), data.split("valid")
    mixed = lens.encode_samples(data, pl.concat([test[5:9], valid[2:4]]))  # each row read through its split
    for name, separate in (("_history_rows", (test, 5, 9)), ("_history_mask", (test, 5, 9))):
        whole = getattr(lens.encode(data, "test", rows=np.arange(5, 9)), name)
        assert torch.equal(getattr(mixed, name)[:4], whole), (name, separate)
    assert torch.equal(
        mixed._history_rows[4:], lens.encode(data, "valid", rows=np.arange(2, 4))._history_rows
    )


def test_sim_defaults_to_the_index_lifelora_retrieve_writes(lifelora_home):
    config = small_config(kind="sim", **{"model.history_length": 7})
    assert config.history_index == lifelora_home / "retrieval" / "synthetic-semantic-7.safetensors"
    assert small_config(kind="sim", history_index="~/index.safetensors").history_index == (
        Path.home() / "index.safetensors"
    )


def test_sim_without_its_index_file_says_how_to_write_it(data, lifelora_home):
    lens = DINLens.create(small_config(kind="sim"), data)
    with pytest.raises(LifeloraError, match=r"history index file not found .*lifelora retrieve"):
        lens.encode(data, "train")


def test_sim_rejects_an_index_that_points_into_the_future(data, tmp_path):
    index = _write_index(data, tmp_path / "index.safetensors", future=True)
    lens = DINLens.create(small_config(kind="sim", history_index=str(index)), data)
    with pytest.raises(LifeloraError, match="future"):
        lens.encode(data, "train")


def test_sim_rejects_an_index_with_the_wrong_rows(data, tmp_path):
    save_file({"train": torch.zeros(3, 5, dtype=torch.int32)}, str(tmp_path / "bad.safetensors"))
    lens = DINLens.create(small_config(kind="sim", history_index=str(tmp_path / "bad.safetensors")), data)
    with pytest.raises(LifeloraError, match="rows"):
        lens.encode(data, "train")
    with pytest.raises(LifeloraError, match="no history positions for split 'valid'"):
        lens.encode(data, "valid")


def test_lens_refuses_data_it_was_not_trained_on(trained, tmp_path):
    other = synthetic_prepared(tmp_path / "other", seed=1)
    with pytest.raises(LifeloraError, match="trained on another dataset"):
        DINLens.load(trained[0]).encode(other, "test")


def test_loading_a_non_lens_directory_or_corrupt_weights_fails_clearly(trained, tmp_path):
    with pytest.raises(LifeloraError, match="not a lens"):
        DINLens.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "lens.json").write_text((trained[0] / "lens" / "lens.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(LifeloraError, match="cannot load lens weights"):
        DINLens.load(broken)


def test_a_lens_going_on_from_an_earlier_one_keeps_what_it_knew_and_grows_its_vocabularies(tmp_path):
    """A continual period's lens (`DINLens.create(until, start)`): vocabularies grown to the new users and
    items, every row and weight of the earlier lens carried over, so samples it fully knew score the same."""
    data = synthetic_prepared(tmp_path / "d", late_users=4)
    timestamps = data.sequences["timestamp"].to_numpy()
    early = int(np.quantile(timestamps, 0.5))
    torch.manual_seed(0)
    first = DINLens.create(small_config(), data, until=early)
    torch.manual_seed(1)
    grown = DINLens.create(small_config(), data, until=int(timestamps.max()), start=first)
    before, after = first.encoder.vocabularies, grown.encoder.vocabularies
    assert all(set(before[field]) <= set(after[field]) for field in before)
    assert len(after["user.user"]) > len(before["user.user"])  # (every item of these data is seen early)
    new_user = sorted(set(after["user.user"]) - set(before["user.user"]))[0]
    new_row = grown.model.user_embeddings[0].weight[after["user.user"].index(new_user) + 1]
    assert torch.count_nonzero(new_row) > 0  # a fresh row, not the zero "unknown" one
    samples = data.samples.filter(pl.col("timestamp") <= early)
    assert samples.height > 0
    _, hidden_first = first.predict(first.encode_samples(data, samples), hidden=True)
    _, hidden_grown = grown.predict(grown.encode_samples(data, samples), hidden=True)
    torch.testing.assert_close(hidden_grown, hidden_first)
    later = data.samples.filter(pl.col("timestamp") > early)
    _, hidden_later = first.predict(first.encode_samples(data, later), hidden=True)
    assert not torch.allclose(grown.predict(grown.encode_samples(data, later), hidden=True)[1], hidden_later)
