"""The LLM side on tiny random models: prompts, retrieval, scoring, ranking, training and resume."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from synthetic import synthetic_prepared
from tiny_llm import save_tiny, tiny_tokenizer

from lifelora.data.history import recent_positions, semantic_positions
from lifelora.errors import LifeloraError
from lifelora.llm.backbone import load_backbone
from lifelora.llm.chat import chat_wrapper
from lifelora.llm.item_embeddings import reduce
from lifelora.tasks.ctr.config import CTRConfig
from lifelora.tasks.ctr.prompts import PromptBuilder, answer_token_ids, history_text
from lifelora.tasks.ctr.ranking import rank_candidates
from lifelora.tasks.ctr.scoring import answer_logits, score_candidates, score_prompts
from lifelora.tasks.ctr.task import CTRTask, answer_loss
from lifelora.tasks.jobs import build, evaluate, evaluate_run, fit, train_and_evaluate
from lifelora.training import TrainHook, TrainSettings, latest_checkpoint, train_model


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_dir(request, tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("llama"), "llama")


def config(model_dir, **sections) -> CTRConfig:
    tree = {
        "dataset": "ml-synthetic",
        "model": str(model_dir),
        "prompt": {"history": 5, "pca_dim": 16},
        "subset": {"train": 48, "eval": 120, "seed": 1},
        "train": {"batch_size": 8, "grad_accum": 2, "lr": 5e-3, "checkpoint_every": 2, "precision": "fp32"},
        "eval": {"batch_size": 16},
    }
    for key, value in sections.items():
        tree[key] = {**tree.get(key, {}), **value} if isinstance(value, dict) else value
    return CTRConfig.model_validate(tree)


# --- prompts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["rella", "target-last"])
def test_prompt_follows_rella_wording_with_no_raw_ids(data, layout):
    tokenizer = tiny_tokenizer()
    builder = PromptBuilder(tokenizer, "ml-synthetic", data.users, data.items, layout=layout)
    user = 1  # user_idx 1 is raw user "2", gender F
    text = builder.prefix_text(user, np.array([3, 7]), np.array([5.0, 2.0]))
    assert "The user is a female. Her job is writer. Her age is 25-34." in text
    assert "She watched the following movies in order in the past, and rated them:" in text
    assert "['0. Movie 4 (1993) (5 stars)', '1. Movie 8 (1997) (2 stars)']" in text
    assert text.endswith("deduce if she will like the movie ***")
    assert "user 2" not in text.lower()
    whole = tokenizer.decode(
        builder.encode(np.array([user]), np.array([0]), [np.array([3])], [np.array([4.0])])[0]
    )
    instructions = "Note that more stars the user rated the movie, the more the user liked the movie.\n"
    instructions += "You should ONLY tell me yes or no."
    if layout == "rella":
        assert whole.endswith(f"***Movie 1 (1990)***.\n{instructions}<|im_end|>\n<|im_start|>assistant\n")
    else:
        assert f"{instructions}\nBased on the movies she has watched" in whole
        assert whole.endswith("***Movie 1 (1990)***.<|im_end|>\n<|im_start|>assistant\n")


def test_unknown_layout_is_refused(data):
    with pytest.raises(LifeloraError, match=r"prompt\.layout: unknown layout 'x'"):
        PromptBuilder(tiny_tokenizer(), "ml-synthetic", data.users, data.items, layout="x")


def test_history_text_shows_half_stars():
    assert history_text(["A", "B"], np.array([1]), np.array([3.5])) == "['0. B (3.5 stars)']\n"


def test_answer_ids_come_from_the_tokenizer():
    tokenizer = tiny_tokenizer()
    head, tail = chat_wrapper(tokenizer)
    assert tail.endswith("assistant\n")
    no, yes = answer_token_ids(tokenizer, tail)
    assert tokenizer.decode([yes]) == "Yes" and tokenizer.decode([no]) == "No"
    plain = tiny_tokenizer(chat=False)
    head, tail = chat_wrapper(plain)
    assert head.startswith("A chat between") and tail == " ASSISTANT:"
    no, yes = answer_token_ids(plain, tail)
    assert plain.decode([yes]) == " Yes" and plain.decode([no]) == " No"


def test_answers_sharing_a_first_token_are_refused():
    class OneToken:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [7, 8]}

    with pytest.raises(LifeloraError, match="first tokens of 'Yes' and 'No' are the same"):
        answer_token_ids(OneToken(), "\n")


# --- retrieval -----------------------------------------------------------------------------------


def test_recent_positions_are_left_padded_in_time_order():
    samples = pl.DataFrame({"hist_len": [2, 6]})
    assert recent_positions(samples, 4).tolist() == [[-1, -1, 0, 1], [2, 3, 4, 5]]


def test_semantic_positions_pick_similar_past_items_in_time_order(data):
    rng = np.random.default_rng(0)
    embeddings = reduce(rng.normal(size=(len(data.items), 12)), 8)
    samples = data.split("test").head(50)
    positions = semantic_positions(data, samples, embeddings, k=3)
    sequences = data.sequences["item_idx"].to_numpy()
    for row, sample in enumerate(samples.iter_rows(named=True)):
        offset = data.users["seq_offset"][sample["user_idx"]]
        past = sequences[offset : offset + sample["hist_len"]]
        sims = embeddings[past] @ embeddings[sample["item_idx"]]
        expected = np.sort(np.argsort(-sims, kind="stable")[:3])
        assert positions[row].tolist() == expected.tolist()
        assert (positions[row] < sample["hist_len"]).all()


def test_semantic_retrieval_checks_the_embedding_table(data):
    with pytest.raises(LifeloraError, match="item embeddings cover 3 items"):
        semantic_positions(data, data.split("test").head(2), np.ones((3, 4), dtype=np.float32), k=2)


# --- scoring and ranking -------------------------------------------------------------------------


def test_batched_scoring_equals_one_prompt_at_a_time(model_dir):
    backbone = load_backbone(str(model_dir))
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(5, 300, n)) for n in (9, 4, 13, 7, 11)]
    batched = score_prompts(
        backbone.model, prompts, 0, (260, 261), batch_size=3, precision="fp32", progress=False
    )
    for prompt, score in zip(prompts, batched, strict=True):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            single = torch.softmax(answer_logits(backbone.model, ids, torch.ones_like(ids), (260, 261)), -1)[
                0, 1
            ]
        assert score == pytest.approx(single.item(), abs=1e-5)


def test_prefix_shared_ranking_equals_independent_prompts(model_dir):
    backbone = load_backbone(str(model_dir))
    rng = np.random.default_rng(1)
    prefix = list(rng.integers(5, 300, 40))
    continuations = [list(rng.integers(5, 300, n)) for n in (3, 8, 5, 2, 6, 4, 7)]
    independent = score_prompts(
        backbone.model, [prefix + c for c in continuations], 0, (260, 261), precision="fp32", progress=False
    )
    shared = score_candidates(
        backbone.model, prefix, continuations, 0, (260, 261), batch_size=3, precision="fp32"
    )
    np.testing.assert_allclose(shared, independent, atol=1e-5)


# --- training ------------------------------------------------------------------------------------


def test_shared_lora_trains_saves_a_peft_adapter_and_evaluates(home, data, llama_dir, tmp_path):
    from peft import PeftModel

    task = CTRTask(data, str(llama_dir))
    summary = train_and_evaluate(task, config(llama_dir), tmp_path)
    curve = summary["train"]
    assert summary["train_samples"] == 48 and curve["steps"] == 3
    assert {"AUC", "LogLoss", "ACC", "gAUC"} <= set(summary["metrics"]["test"])
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "predictions_test.parquet").is_file() and (tmp_path / "curve.png").is_file()
    # the backbone is bare again, ready for the next run on the same setup (as the demo does)
    assert not any("lora" in name for name, _ in task.backbone.model.named_modules())
    fresh = load_backbone(str(llama_dir))
    reloaded = PeftModel.from_pretrained(fresh.model, str(tmp_path / "adapter"))
    (tmp_path / "again").mkdir()
    again = evaluate_run(CTRTask(data, fresh), config(llama_dir), tmp_path / "again", tmp_path / "adapter")
    assert again["metrics"]["test"]["AUC"] == pytest.approx(summary["metrics"]["test"]["AUC"], abs=1e-6)
    assert isinstance(reloaded, PeftModel)


def test_training_lowers_the_answer_loss(home, data, llama_dir, tmp_path):
    cfg = config(llama_dir, train={"lr": 2e-2, "epochs": 4}, subset={"train": 32})
    summary = train_and_evaluate(CTRTask(data, str(llama_dir)), cfg, tmp_path)
    losses = [row["loss"] for row in __import__("json").loads((tmp_path / "curve.json").read_text())]
    assert np.mean(losses[-2:]) < losses[0] - 0.1, losses
    assert summary["train"]["steps"] == 8


def test_fit_again_continues_the_same_adapter_and_runs_share_no_state(home, data, llama_dir, tmp_path):
    cfg = config(llama_dir, train={"lr": 2e-2})
    task = CTRTask(data, str(llama_dir))
    adapter = build(task, cfg)
    fit(task, adapter, cfg, tmp_path / "first")
    after_first = adapter.snapshot()
    fit(task, adapter, cfg, tmp_path / "second")
    moved = [name for name, p in adapter.branch_parameters().items() if not torch.equal(p, after_first[name])]
    assert moved, "a second fit must go on training the adapter the first one left"
    first_scores = evaluate(task, adapter.model, cfg)["AUC"]
    adapter.unload()

    zero_before = evaluate(task, task.backbone.model, cfg.model_copy(update={"adapter": None}))
    other = CTRTask(data, str(llama_dir))  # a run on a fresh task gives the same as on the used one
    twice = build(other, cfg)
    fit(other, twice, cfg, tmp_path / "other-first")
    fit(other, twice, cfg, tmp_path / "other-second")
    assert evaluate(other, twice.model, cfg)["AUC"] == pytest.approx(first_scores, abs=1e-7)
    twice.unload()
    zero_after = evaluate(task, task.backbone.model, cfg.model_copy(update={"adapter": None}))
    assert zero_after["AUC"] == zero_before["AUC"]


class Killed(Exception):
    pass


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_resume_after_a_kill_reaches_the_same_weights(home, data, llama_dir, tmp_path):
    from lifelora.adapters.lora import LoraAdapter

    def run(run_dir, resume=False, kill_at=None):
        cfg = config(llama_dir, adapter={"lora_dropout": 0.1})
        task = CTRTask(data, str(llama_dir))
        torch.manual_seed(0)
        model = LoraAdapter.attach(task.backbone.model, cfg.adapter).model
        examples = task.examples(cfg, "train", 48)
        calls = []

        class Kill(TrainHook):
            def loss_term(self, ctx):
                calls.append(1)
                if kill_at is not None and len(calls) > kill_at:
                    raise Killed
                return torch.zeros(())

        settings = cfg.train.model_copy(update={"epochs": 2})
        result = train_model(
            model, examples, examples.collate, answer_loss, settings, run_dir, resume=resume, hooks=[Kill()]
        )
        return _params(result["model"])

    straight = run(tmp_path / "straight")
    with pytest.raises(Killed):
        run(tmp_path / "killed", kill_at=9)  # after the step-4 checkpoint, mid-way through epoch 2
    assert latest_checkpoint(tmp_path / "killed").name == "step-4"
    resumed = run(tmp_path / "killed", resume=True)
    assert straight.keys() == resumed.keys()
    for name, value in straight.items():
        assert torch.equal(resumed[name], value), name


def test_recommend_returns_the_top_k_of_the_candidates(home, data, llama_dir):
    cfg = config(llama_dir, adapter=None)
    task = CTRTask(data, str(llama_dir))
    candidates = np.arange(12)
    top = rank_candidates(task, task.backbone.model, cfg, 3, candidates, k=5)
    assert top["rank"].to_list() == [1, 2, 3, 4, 5]
    assert sorted(top["score"].to_list(), reverse=True) == top["score"].to_list()
    assert set(top["item_idx"].to_list()) <= set(candidates.tolist())


def test_train_settings_reject_an_unknown_precision():
    with pytest.raises(ValueError):
        TrainSettings(precision="fp8")


def test_item_embeddings_are_cached_exactly(home, data, llama_dir):
    from lifelora.llm.item_embeddings import embeddings_path, item_embeddings

    backbone = load_backbone(str(llama_dir))
    first = item_embeddings(backbone, data, pca_dim=8)
    assert embeddings_path(backbone.name, data, 8).is_file()
    np.testing.assert_array_equal(item_embeddings(backbone, data, pca_dim=8), first)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)


def test_prompts_are_the_same_whatever_the_cpu_and_run_precision(data, llama_dir, tmp_path, monkeypatch):
    """What the model is asked must not depend on the machine: a CPU with native bf16 (simulated, so any
    CPU runs the bf16 path) whose run resolves `auto` to bf16 retrieves the same histories and builds the
    same prompt ids as an fp32 run, even when the prompts are built under the training's autocast."""
    import lifelora.precision as precision

    def prompts_and_vectors(home: str, run_precision: str):
        monkeypatch.setenv("LIFELORA_HOME", str(tmp_path / home))  # each its own embeddings cache
        cfg = config(llama_dir, train={"precision": run_precision}, eval={"precision": run_precision})
        task = CTRTask(data, str(llama_dir))
        with precision.autocast(run_precision):
            examples = task.examples(cfg, "test", 40)
        return task.embeddings(cfg.prompt), examples

    fp32_vectors, fp32 = prompts_and_vectors("fp32", "fp32")
    monkeypatch.setattr(precision, "native_bf16", lambda device_type="cpu": True)
    assert precision.resolve("auto") == "bf16"
    bf16_vectors, bf16 = prompts_and_vectors("bf16", "auto")
    np.testing.assert_array_equal(bf16_vectors, fp32_vectors)
    assert [row.tolist() for row in bf16.hist_items] == [row.tolist() for row in fp32.hist_items]
    assert bf16.prompts(np.arange(len(bf16))) == fp32.prompts(np.arange(len(fp32)))


def test_item_embeddings_refuse_a_backbone_not_in_fp32(data, llama_dir):
    from lifelora.llm.item_embeddings import mean_hidden_states

    backbone = load_backbone(str(llama_dir), dtype=torch.bfloat16)
    with pytest.raises(LifeloraError, match="computed in fp32"):
        mean_hidden_states(backbone, ["a movie"])


def test_semantic_retrieval_breaks_ties_by_the_earliest_position(data):
    samples = data.split("test").head(20)
    tied = np.ones((len(data.items), 4), dtype=np.float32) / 2.0  # every item equally similar
    positions = semantic_positions(data, samples, tied, k=3)
    hist_len = samples["hist_len"].to_numpy()
    for row, length in zip(positions, hist_len, strict=True):
        kept = row[row >= 0].tolist()
        assert kept == list(range(min(3, int(length))))


def test_ml25m_has_no_profile_and_neutral_words():
    from lifelora.tasks.ctr.prompts import template_for, user_texts

    users = pl.DataFrame({"user": ["1"]})
    template = template_for("ml-25m", users)
    profile, intro, question = user_texts(users, template)[0]
    assert profile == ""
    assert intro.startswith("The user watched the following movies")
    assert question == "Based on the movies the user has watched, deduce if the user will like the movie ***"
    assert template_for("goodreads-comics").noun == "book"


def test_personalized_routing_gives_users_the_lens_never_saw_its_cold_start_vector(home, llama_dir, tmp_path):
    from lifelora.lens import DINLens, LensConfig

    data = synthetic_prepared(tmp_path / "d", name="ml-synthetic", late_users=4)
    small = {"embed_dim": 8, "history_length": 6, "mlp_units": [16]}
    DINLens.create(LensConfig(dataset="ml-synthetic", model=small), data).save(tmp_path / "lens")
    cfg = config(
        llama_dir,
        adapter={"kind": "personalized", "n_loras": 2},
        lens=str(tmp_path / "lens"),
        prompt={"retriever": "recent"},
    )
    task = CTRTask(data, str(llama_dir))
    lens = task.lens(cfg)
    test = data.split("test")
    seen = data.split("train")["user_idx"].unique().to_numpy()
    unseen = np.flatnonzero(~np.isin(test["user_idx"].to_numpy(), seen))
    assert len(unseen) > 0
    routing = lens.routing(data, test)
    batch = lens.encode(data, "test").batch(torch.from_numpy(unseen))
    assert torch.all(batch.user_fields[:, 0] == 0)  # unknown to the lens: the zero cold-start code
    with torch.no_grad():
        assert torch.allclose(routing[unseen], lens.model.hidden(batch))
        batch.user_fields[:, 0] = 1  # as if they were a known user
        assert not torch.allclose(routing[unseen], lens.model.hidden(batch))


def test_an_evolving_click_through_lens_is_built_untrained_from_a_lens_config(home, llama_dir, tmp_path):
    from lifelora.lens import DINLens

    data = synthetic_prepared(tmp_path / "d", name="ml-synthetic")
    named = tmp_path / "din-small.yaml"
    named.write_text("kind: din\nmodel:\n  embed_dim: 8\n  history_length: 6\n  mlp_units: [12]\n")
    cfg = config(llama_dir, adapter={"kind": "personalized", "n_loras": 2}, lens=str(named))
    task = CTRTask(data, str(llama_dir))
    lens = task.lens(cfg, trained=False)
    assert isinstance(lens, DINLens) and lens.hidden_size == 12
    assert lens.config.dataset == "ml-synthetic" and lens.config.model.history_length == 6
    assert task.lens(cfg, trained=False) is lens  # one lens per task and config
    with pytest.raises(LifeloraError, match=r"din-small\.yaml is a lens config, and routing needs a trained"):
        task.lens(cfg)
