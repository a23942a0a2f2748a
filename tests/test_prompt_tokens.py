"""Prompt token ids are the tokenizer's ids for the prompt's text, and prefix-shared ranking cuts them
without changing them: on tiny tokenizers with titles that merge across the seams, and on the
embedded SmolLM2 tokenizer over real ML-100K and ML-1M prompts."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from tiny_llm import save_tiny, tiny_tokenizer

from lifelora.data.history import recent_positions
from lifelora.io import lifelora_home
from lifelora.tasks.ctr.config import CTRConfig
from lifelora.tasks.ctr.examples import CTRExamples
from lifelora.tasks.ctr.prompts import LAYOUTS, PromptBuilder, common_prefix_length
from lifelora.tasks.ctr.ranking import rank_candidates
from lifelora.tasks.ctr.scoring import score_prompts
from lifelora.tasks.ctr.task import CTRTask

# Titles whose first or last characters a byte-level BPE joins to the text around them ("***'",
# ")***.", "****"), besides plain ones.
CACHE = lifelora_home()  # the real cache, read before the `home` fixture points elsewhere
TRICKY = [
    "'Til There Was You",
    '"Great Performances" Cats',
    "(500) Days of Summer",
    "*batteries not included",
    "M*A*S*H*",
    "101 Dalmatians",
    " Yes",
    "Stars ***",
    "Movie 3",
    "Naïve, Café.",
]


def assert_round_trip(builder: PromptBuilder, ids: list[int], text: str) -> None:
    """The ids decode to the prompt's text, and that text tokenizes (plus the BOS rule) to the ids."""
    tokenizer = builder.tokenizer
    assert ids[: len(builder.bos)] == builder.bos
    decoded = tokenizer.decode(ids[len(builder.bos) :], clean_up_tokenization_spaces=False)
    assert decoded == text
    assert builder.bos + tokenizer(decoded, add_special_tokens=False)["input_ids"] == ids


def assert_candidates_share_a_prefix(
    builder: PromptBuilder, user: int, items: np.ndarray, ratings: np.ndarray, targets: np.ndarray
) -> list[int]:
    """prefix + each continuation is the whole prompt for that target; returns the prefix."""
    prefix, continuations = builder.encode_candidates(user, items, ratings, targets)
    n = len(targets)
    whole = builder.encode(np.full(n, user), targets, [items] * n, [ratings] * n)
    assert [prefix + c for c in continuations] == whole
    assert all(continuations)
    return prefix


def tiny_users(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": [str(u + 1) for u in range(n)],
            "gender": [["F", "M", ""][u % 3] for u in range(n)],
            "age": ["25-34"] * n,
            "occupation": ["writer"] * n,
        }
    )


def tiny_items() -> pl.DataFrame:
    return pl.DataFrame(
        {"title": TRICKY * 2, "year": [1990 + i for i in range(len(TRICKY))] + [None] * len(TRICKY)},
        schema={"title": pl.Utf8, "year": pl.Int32},
    )


@pytest.mark.parametrize("chat", [True, False], ids=["chat-template", "plain-wrapper"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tiny_prompt_ids_are_the_tokenizers_ids_for_the_text(chat, layout):
    builder = PromptBuilder(tiny_tokenizer(chat), "ml-tiny", tiny_users(6), tiny_items(), layout=layout)
    rng = np.random.default_rng(0)
    n_items = len(builder.titles)
    for user in range(6):
        items = rng.choice(n_items, 4, replace=False)
        ratings = rng.choice([1.0, 3.5, 5.0], 4)
        targets = np.arange(n_items)
        ids = builder.encode(np.full(n_items, user), targets, [items] * n_items, [ratings] * n_items)
        for target, prompt in zip(targets, ids, strict=True):
            assert_round_trip(builder, prompt, builder.text(user, int(target), items, ratings))
        prefix = assert_candidates_share_a_prefix(builder, user, items, ratings, targets)
        # all the text before the title is shared, but for the question's closing "***" where a title
        # like "*batteries not included" joins it
        shared, text = builder.tokenizer.decode(prefix), builder.prefix_text(user, items, ratings)
        assert text.startswith(shared) and len(text) - len(shared) <= len("***")


def test_the_shared_prefix_is_what_every_prompt_begins_with():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4, 5], [1, 2]]) == 2
    assert common_prefix_length([[1, 2, 3]]) == 3
    assert common_prefix_length([[3, 1], [1, 2], [2, 9]]) == 0


def test_one_candidate_or_none_still_splits_its_prompt():
    builder = PromptBuilder(tiny_tokenizer(), "ml-tiny", tiny_users(2), tiny_items())
    items, ratings = np.array([1, 2]), np.array([4.0, 2.0])
    for target in range(len(builder.titles)):
        assert_candidates_share_a_prefix(builder, 1, items, ratings, np.array([target]))
    prefix, continuations = builder.encode_candidates(1, items, ratings, np.array([], dtype=np.int64))
    assert continuations == []
    assert builder.tokenizer.decode(prefix) == builder.prefix_text(1, items, ratings)


# --- training, scoring and ranking see the same ids ------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_batches_and_ranking_use_the_same_ids(data, layout):
    builder = PromptBuilder(tiny_tokenizer(), "ml-synthetic", data.users, data.items, layout=layout)
    samples = data.split("test").head(40)
    examples = CTRExamples(data, builder, samples, recent_positions(samples, 5))
    batch = examples.collate(list(range(samples.height)))
    others = np.arange(len(builder.titles))
    for row in range(samples.height):
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        items, ratings = examples.hist_items[row], examples.hist_ratings[row]
        user, target = int(examples.users[row]), int(examples.targets[row])
        assert ids == examples.prompts([row])[0]
        assert_round_trip(builder, ids, builder.text(user, target, items, ratings))
        targets = np.concatenate([[target], others])
        prefix, continuations = builder.encode_candidates(user, items, ratings, targets)
        assert prefix + continuations[0] == ids


def test_ranked_scores_equal_the_scores_of_whole_prompts(home, data, tmp_path):
    model_dir = save_tiny(tmp_path / "llama", "llama")
    cfg = CTRConfig.model_validate(
        {
            "dataset": "ml-synthetic",
            "model": str(model_dir),
            "adapter": None,
            "prompt": {"history": 5},
            "train": {"precision": "fp32"},
        }
    )
    task = CTRTask(data, str(model_dir))
    builder = task.builder(cfg.prompt.layout)
    user, candidates = 3, np.arange(len(builder.titles))
    ranked = rank_candidates(
        task, task.backbone.model, cfg, user, candidates, k=len(candidates), batch_size=7
    )
    row = data.users.row(user, named=True)
    seq = data.sequences.slice(row["seq_offset"] + row["seq_len"] - 5, 5)
    n = len(candidates)
    items, ratings = seq["item_idx"].to_numpy(), seq["rating"].to_numpy()
    prompts = builder.encode(np.full(n, user), candidates, [items] * n, [ratings] * n)
    pad, answers = task.backbone.tokenizer.pad_token_id, builder.answer_ids
    whole = score_prompts(task.backbone.model, prompts, pad, answers, precision="fp32", progress=False)
    by_item = dict(zip(ranked["item_idx"].to_list(), ranked["score"].to_list(), strict=True))
    np.testing.assert_allclose([by_item[c] for c in candidates], whole, atol=1e-5)


# --- the embedded SmolLM2 tokenizer on real prompts --------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    """The embedded tokenizer from the real cache: under this module's `home` it would be converted again."""
    from lifelora.llm.backbone import load_backbone

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIFELORA_HOME", str(CACHE))
        return load_backbone("smollm2-135m").tokenizer


@pytest.mark.integration
@pytest.mark.parametrize("dataset", ["ml-100k", "ml-1m"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_real_prompt_ids_are_the_tokenizers_ids_for_the_text(smollm2, dataset, layout, monkeypatch):
    from lifelora.data.store import open_prepared

    monkeypatch.setenv("LIFELORA_HOME", str(CACHE))  # the embedded data as prepared in the real cache

    data = open_prepared(dataset, prepare_missing=True)
    builder = PromptBuilder(smollm2, data.name, data.users, data.items, layout=layout)
    test = data.split("test")
    rng = np.random.default_rng(0)
    samples = test[np.sort(rng.choice(test.height, 300, replace=False))]
    examples = CTRExamples(data, builder, samples, recent_positions(samples, 10))
    prompts = examples.prompts(np.arange(samples.height))
    for row, ids in enumerate(prompts):
        items, ratings = examples.hist_items[row], examples.hist_ratings[row]
        text = builder.text(int(examples.users[row]), int(examples.targets[row]), items, ratings)
        assert_round_trip(builder, ids, text)

    # candidates: random items, and every title that starts with neither a letter nor a digit or that
    # does not end in its year's ")"
    odd = [i for i, t in enumerate(builder.titles) if not t[0].isalnum() or not t.endswith(")")]
    for row in range(0, samples.height, 15):
        items, ratings = examples.hist_items[row], examples.hist_ratings[row]
        user = int(examples.users[row])
        targets = np.concatenate([rng.choice(len(builder.titles), 40, replace=False), odd])
        prefix = assert_candidates_share_a_prefix(builder, user, items, ratings, targets)
        # SmolLM2 never joins the question's closing "***" to a title: all of the text before it is shared
        assert smollm2.decode(prefix) == builder.prefix_text(user, items, ratings)
