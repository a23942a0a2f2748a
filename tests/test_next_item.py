"""Generative next-item on tiny random models: PESO's prompt, the response-only loss, training only LoRA
and the code tokens' rows, beam and exact decoding, run directories, the commands and their errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from tiny_llm import save_tiny

from lifelora.data.sequential import leave_one_out
from lifelora.errors import LifeloraError
from lifelora.io import read_json
from lifelora.tasks.jobs import build, evaluate, evaluate_run, fit, train_and_evaluate
from lifelora.tasks.next_item.config import NextItemConfig
from lifelora.tasks.next_item.task import CODES_DIR, NextItemTask, code_loss


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("llama"), "llama")


def config(model_dir, **sections) -> NextItemConfig:
    tree = {
        "dataset": "ml-synthetic",
        "model": str(model_dir),
        "semantic_ids": {"levels": 2, "codebook_size": 4, "pca_dim": 16},
        "adapter": {"kind": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "prompt": {"history": 5},
        "subset": {"train": 48, "eval": 12, "seed": 1},
        "train": {
            "batch_size": 8,
            "grad_accum": 1,
            "lr": 2e-2,
            "checkpoint_every": None,
            "precision": "fp32",
        },
        "eval": {"batch_size": 6, "beams": 10},
    }
    for key, value in sections.items():
        tree[key] = {**tree.get(key, {}), **value} if isinstance(value, dict) else value
    return NextItemConfig.model_validate(tree)


@pytest.fixture
def task(data, llama_dir, home):
    return NextItemTask(data, str(llama_dir), config(llama_dir).semantic_ids, log=lambda _m: None)


def test_prompt_is_pesos_wording_with_code_tokens_and_the_response_is_the_last_columns(task, llama_dir):
    cfg = config(llama_dir)
    examples = task.examples(cfg, "train", 8)
    tokenizer = task.backbone.tokenizer
    text = tokenizer.decode(examples.prompts([0])[0])
    assert "The user has interacted with items <a_" in text
    assert "in chronological order. Can you predict the next possible item that the user may expect?" in text
    assert text.endswith("<|im_start|>assistant\n")
    history = examples.histories[0]
    assert task.vocabulary.text_of(task.codes.codes[history[-1]]) in text
    batch = examples.collate([0, 1, 2])
    length = task.code_length
    target_ids = task.code_ids[examples.targets[:3]]
    assert torch.equal(batch["input_ids"][:, -length:], torch.from_numpy(target_ids))
    assert torch.equal(batch["labels"], torch.from_numpy(target_ids))
    assert (
        tokenizer(text, add_special_tokens=False)["input_ids"]
        == examples.prompts([0])[0][len(examples.builder.bos) :]
    )


def test_loss_is_on_the_response_only(task, llama_dir):
    examples = task.examples(config(llama_dir), "train", 4)
    batch = examples.collate([0, 1])
    model = task.backbone.model
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    L = task.code_length
    expected = torch.nn.functional.cross_entropy(
        (full[:, -L - 1 : -1] / 0.8).reshape(-1, full.shape[-1]), batch["labels"].reshape(-1)
    )
    assert torch.allclose(code_loss(model, batch, 0.8), expected, atol=1e-5)


def test_fit_trains_lora_and_only_the_code_tokens_rows(task, llama_dir, tmp_path):
    cfg = config(llama_dir)
    embedding = task.backbone.model.get_input_embeddings().weight.detach().clone()
    adapter = build(task, cfg)
    try:
        result = fit(task, adapter, cfg, tmp_path)
        assert result["curve"][-1]["loss"] < result["curve"][0]["loss"]
        merged = adapter.model.get_input_embeddings()
        rows = torch.as_tensor(list(task.vocabulary.new_token_ids))
        after = merged(torch.arange(embedding.shape[0])).detach()
        others = torch.ones(embedding.shape[0], dtype=torch.bool)
        others[rows] = False
        assert torch.equal(after[others], embedding[others])
        assert not torch.allclose(after[rows], embedding[rows])
    finally:
        adapter.unload()


def test_beam_with_all_items_matches_exact_ranking(task, llama_dir):
    n_items = task.trie.n_items
    beam_cfg = config(llama_dir, eval={"beams": n_items, "decoding": "beam"})
    exact_cfg = config(llama_dir, eval={"decoding": "exact", "top_k": n_items})
    beam = evaluate(task, task.backbone.model, beam_cfg)
    exact = evaluate(task, task.backbone.model, exact_cfg)
    for key in ("hit@5", "ndcg@5", "hit@10", "ndcg@10"):
        assert beam[key] == pytest.approx(exact[key], abs=1e-9)


def test_train_and_evaluate_writes_a_run_that_evaluates_again_identically(data, llama_dir, tmp_path, home):
    cfg = config(llama_dir)
    run = tmp_path / "run"
    run.mkdir()
    task = NextItemTask(data, str(llama_dir), cfg.semantic_ids, log=lambda _m: None)
    summary = train_and_evaluate(task, cfg, run)
    metrics = summary["metrics"]["test"]
    assert {"hit@5", "ndcg@10", "mrr@10", "users_per_s"} <= set(metrics)
    assert metrics["users"] == 12
    for name in (
        "adapter/adapter_config.json",
        f"{CODES_DIR}/semantic_ids.json",
        "metrics.json",
        "curve.png",
    ):
        assert (run / name).is_file(), name
    ranked = pl.read_parquet(run / "ranked_test.parquet")
    assert ranked.height == 12 and all(len(r) == 10 for r in ranked["ranked"])
    assert set(ranked["target"]) <= set(data.items["item"])

    from lifelora.tasks.next_item.semantic_ids import ItemCodes

    again = NextItemTask(data, str(llama_dir), ItemCodes.load(run / CODES_DIR), log=lambda _m: None)
    out = tmp_path / "eval"
    out.mkdir()
    evaluated = evaluate_run(again, cfg, out, adapter_dir=run / "adapter")["metrics"]["test"]
    for key in ("hit@5", "ndcg@5", "hit@10", "ndcg@10", "mrr@10"):
        assert evaluated[key] == metrics[key]
    assert pl.read_parquet(out / "ranked_test.parquet").equals(ranked)


def test_codes_of_another_item_table_are_refused(data, llama_dir, tmp_path, home):
    from synthetic import synthetic_prepared

    from lifelora.llm.backbone import load_backbone
    from lifelora.tasks.next_item.semantic_ids import item_codes

    other = synthetic_prepared(tmp_path / "other", name="ml-synthetic", n_items=30)
    codes = item_codes(
        load_backbone(str(llama_dir)), other, config(llama_dir).semantic_ids, log=lambda _m: None
    )
    with pytest.raises(LifeloraError, match="another item table"):
        NextItemTask(data, str(llama_dir), codes, log=lambda _m: None)


def test_an_empty_split_is_a_clear_error(task, llama_dir):
    from lifelora.tasks.next_item.examples import NextItemExamples

    empty = leave_one_out(task.data, "test").subset(np.array([], dtype=np.int64))
    with pytest.raises(LifeloraError, match="the test split has no next-item targets"):
        NextItemExamples(task.data, empty, task.builder, task.code_ids, 5)


# --- commands ------------------------------------------------------------------------------------


def _write_config(tmp_path, llama_dir, data) -> str:
    import yaml

    tree = config(llama_dir).model_dump(mode="json")
    tree["data_dir"] = str(data.directory)
    path = tmp_path / "next-item.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def test_cli_train_evaluate_recommend_and_tokenize(run_cli, data, llama_dir, tmp_path, home):
    cfg_file = _write_config(tmp_path, llama_dir, data)
    run = tmp_path / "run"
    trained = run_cli("train", "-c", cfg_file, "--run-dir", run, "subset.train=16")
    assert trained.code == 0, trained.stderr
    assert read_json(run / "metrics.json")["task"] == "next-item"
    assert "ndcg@10" in trained.stdout and "AUC" not in trained.stdout
    evaluated = run_cli("evaluate", "--run", run, "--decoding", "exact", "--run-dir", tmp_path / "ev")
    assert evaluated.code == 0, evaluated.stderr
    assert read_json(tmp_path / "ev" / "metrics.json")["metrics"]["test"]["decoding"] == "exact"
    top = run_cli("recommend", "3", "--run", run, "--k", "3", "--json")
    assert top.code == 0, top.stderr
    assert len(top.stdout.strip().splitlines()) == 3
    tokenized = run_cli(
        "items",
        "tokenize",
        "ml-synthetic",
        "-c",
        cfg_file,
        "--data-dir",
        data.directory,
        "--out",
        tmp_path / "c",
    )
    assert tokenized.code == 0, tokenized.stderr
    assert "collision_rate" in tokenized.stdout and (tmp_path / "c" / "semantic_ids.json").is_file()


def test_cli_errors_are_one_line(run_cli, data, llama_dir, tmp_path, home):
    cfg_file = _write_config(tmp_path, llama_dir, data)
    bad_task = run_cli("train", "-c", cfg_file, "--task", "rating")
    assert bad_task.code == 2 and bad_task.error_lines == [
        "lifelora: error: --task: unknown task 'rating'; choose one of ctr, next-item"
    ]
    ctr_decoding = run_cli("evaluate", "--task", "ctr", "--decoding", "beam")
    assert ctr_decoding.code == 2 and "--decoding: only for --task next-item" in ctr_decoding.stderr
    unknown_user = run_cli("recommend", "nobody", "-c", cfg_file, "--task", "next-item")
    assert unknown_user.code == 2 and "user 'nobody' is not in ml-synthetic" in unknown_user.stderr


def test_seen_removed_evaluation_never_recommends_an_earlier_item_of_the_user(task, llama_dir):
    cfg = config(llama_dir, eval={"batch_size": 6, "beams": 10, "seen": "remove"})
    examples = task.examples(cfg, "test", 12)
    seen = task.seen_items(examples.samples)
    assert sum(len(s) for s in seen) > 0 and len(seen) == len(examples)
    for row, items in enumerate(seen):  # a user's earlier items, less the target
        position = examples.samples.position[row]
        assert len(items) <= position and examples.samples.target[row] not in items
    ranked, _, ranks = task.decode(task.backbone.model, cfg, examples)
    for row, items in enumerate(seen):
        assert not set(ranked[row].tolist()) & set(task.trie.representative[items].tolist())
    metrics, _ = task.evaluate_examples(task.backbone.model, cfg, examples, None, "test")
    assert metrics["seen"] == "remove" and metrics["hit@10"] == float(np.mean(ranks < 10))

    users = task.data.users["user"].to_list()[:4]  # recommending: never an item of the whole history
    recommendations = task.recommend_many(task.backbone.model, cfg, users, 5, {})
    all_items, table = task.data.sequences["item_idx"].to_numpy(), task.data.users
    for user, recommendation in zip(users, recommendations, strict=True):
        row = table.row(task.data.user_index(user), named=True)
        had = all_items[row["seq_offset"] : row["seq_offset"] + row["seq_len"]]
        representatives = task.trie.representative[had]
        raw = task.data.items["item"].to_numpy()[representatives]
        assert recommendation.table.height == 5
        assert not set(recommendation.table["item"].to_list()) & set(raw.tolist())
