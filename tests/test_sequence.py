"""The sequence layout of next-item training on tiny random models: windows supervise exactly the targets
the prompt layout trains, each with at least its history; a window's log-probability of each supervised
item is the decoding score of the same item after the same history (shared LoRA and a per-token routed
personalized bank); a later item never changes an earlier one's; the whole run trains and evaluates."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from test_next_item import config as next_item_config
from tiny_llm import save_tiny

from lifelora.data.periods import PeriodSpec, interaction_periods
from lifelora.data.sequential import NextItemSamples, block_leave_one_out, leave_one_out
from lifelora.lens.sasrec import SASRecLens
from lifelora.lens.sasrec.config import SASRecConfig
from lifelora.tasks.jobs import build, evaluate, evaluate_run, train_and_evaluate
from lifelora.tasks.next_item.config import NextItemConfig
from lifelora.tasks.next_item.decoding import exact_scores
from lifelora.tasks.next_item.sequence import (
    WindowExamples,
    plan_windows,
    supervised_log_probs,
    token_routing,
)
from lifelora.tasks.next_item.task import NextItemTask

HISTORY, WINDOW = 4, 9


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("llama"), "llama")


def config(model_dir, **sections) -> NextItemConfig:
    """The next-item tests' tiny setting (`test_next_item.config`) in the sequence layout."""
    tree = {
        "layout": "sequence",
        "prompt": {"history": HISTORY, "window": WINDOW},
        "subset": {"train": 12},
        "train": {"batch_size": 4},
    }
    for key, value in sections.items():
        tree[key] = {**tree.get(key, {}), **value} if isinstance(value, dict) else value
    return next_item_config(model_dir, **tree)


@pytest.fixture
def task(data, llama_dir, home):
    return NextItemTask(data, str(llama_dir), config(llama_dir).semantic_ids, log=lambda _m: None)


def _keys(samples: NextItemSamples) -> set[tuple[int, int]]:
    return set(zip(samples.user_idx.tolist(), samples.position.tolist(), strict=True))


def _check_windows(samples: NextItemSamples, windows) -> None:
    """Every target once, inside its window, with min(position, HISTORY) items before it there."""
    targets = windows.targets
    assert len(targets) == len(_keys(targets)) == len(_keys(samples))
    assert _keys(targets) == _keys(samples)
    w = windows.window_of
    assert (windows.user_idx[w] == targets.user_idx).all()
    assert (targets.position - windows.start[w] >= np.minimum(targets.position, HISTORY)).all()
    assert (targets.position < windows.end[w]).all() and (windows.end - windows.start <= WINDOW).all()
    assert len(windows) < len(targets) / 2  # windows group targets (the point of the layout)


def test_windows_train_exactly_the_prompt_layouts_targets(data):
    train = leave_one_out(data, "train")
    windows = plan_windows(train, HISTORY, WINDOW)
    _check_windows(train, windows)
    held_out = _keys(leave_one_out(data, "valid")) | _keys(leave_one_out(data, "test"))
    assert not held_out & _keys(windows.targets)
    length = data.users["seq_len"].to_numpy()
    assert (windows.end <= length[windows.user_idx] - 2).all()  # held-out items are not even context

    chosen = np.array([0, 3, 4, 10])
    subset = windows.subset(chosen)
    again = plan_windows(subset.targets, HISTORY, WINDOW)
    assert (again.start == windows.start[chosen]).all() and (again.end == windows.end[chosen]).all()


def test_windows_of_a_period_with_replay_carry_earlier_items_as_context(data):
    periods = interaction_periods(data, PeriodSpec(fractions=[0.5, 0.25, 0.25]))
    current = block_leave_one_out(data, periods, 1, "train")
    replayed = block_leave_one_out(data, periods, 0, "train").subset(np.arange(0, 200, 7))
    both = NextItemSamples.concat([current, replayed])
    windows = plan_windows(both, HISTORY, WINDOW)
    _check_windows(both, windows)
    for split in ("valid", "test"):
        for period in (0, 1):
            assert not _keys(block_leave_one_out(data, periods, period, split)) & _keys(windows.targets)
    offset = data.users["seq_offset"].to_numpy()
    context = [periods[offset[u] + s] for u, s in zip(windows.user_idx, windows.start, strict=True)]
    assert 0 in context  # some windows of period 1 start in period 0: its items are context there


def test_subset_train_counts_windows_and_the_log_says_how_many_targets(task, llama_dir):
    cfg = config(llama_dir)
    samples = task.samples(cfg, "train", cfg.subset.train)
    examples = task.examples_of(cfg, samples)
    assert isinstance(examples, WindowExamples)
    assert len(examples) == cfg.subset.train and examples.n_targets == len(samples) > 2 * len(examples)
    assert task.amount(examples) == f"12 ml-synthetic windows ({len(samples):,} next-item targets)"
    prompt = config(llama_dir, layout="prompt")
    assert len(task.samples(prompt, "train", cfg.subset.train)) == cfg.subset.train


def _lens(data) -> SASRecLens:
    torch.manual_seed(0)
    return SASRecLens.create(SASRecConfig.model_validate({"model": {"hidden": 8, "max_len": 8}}), data)


ADAPTERS = {
    "lora": {"kind": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    "personalized": {
        "kind": "personalized",
        "r": 2,
        "n_loras": 3,
        "mixing": "products",
        "target_modules": ["q_proj", "v_proj", "o_proj"],
    },
}


def _trained_looking(task, cfg, lens):
    """An adapter whose every trainable weight is random (LoRA's B starts at zero: nothing to compare)."""
    adapter = build(task, cfg, lens)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in adapter.model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return adapter


@pytest.mark.parametrize(
    ("kind", "normalise"), [("lora", "level"), ("personalized", "level"), ("lora", "trie")]
)
def test_a_windows_item_log_probability_is_its_decoding_score_after_the_same_history(
    data, task, llama_dir, tmp_path, kind, normalise
):
    lens = _lens(data) if kind == "personalized" else None
    lens_dir = tmp_path / "lens"
    if lens is not None:
        lens.save(lens_dir)
    cfg = config(
        llama_dir,
        adapter=ADAPTERS[kind],
        lens=str(lens_dir) if lens else None,
        prompt={"normalise": normalise},
    )
    adapter = _trained_looking(task, cfg, lens)
    model = adapter.model.eval()
    examples = task.examples_of(cfg, task.samples(cfg, "train", 3), lens)
    batch = examples.collate([0, 1, 2])
    assert ("routing" in batch) == (lens is not None)
    if lens is not None:
        assert batch["routing"].shape[:2] == batch["input_ids"].shape
    decoding = task.decoding(cfg)
    with torch.no_grad():
        per_token = supervised_log_probs(model, batch, decoding)
    windows, length = examples.windows, task.code_length
    per_item = per_token.reshape(-1, length).sum(1)  # row-major: window by window, in time order
    assert len(per_item) == examples.n_targets

    targets = windows.targets
    w = windows.window_of
    starts = windows.start[w]
    items, offset = data.sequences["item_idx"].to_numpy(), data.users["seq_offset"].to_numpy()
    histories = [
        items[offset[user] + np.arange(start, position)]
        for user, start, position in zip(targets.user_idx, starts, targets.position, strict=True)
    ]
    prompts = task.sequence_builder.encode(histories)  # the inference prompt of each target
    routing = {}
    if lens is not None:
        route = partial(lens.routing, data)
        routing = {
            "routing": route(targets),
            "token_routing": token_routing(
                route, task.sequence_builder, targets.user_idx, starts, targets.position
            ),
        }
    scores = exact_scores(model, prompts, decoding, **routing)
    decoded = scores[torch.arange(len(prompts)), torch.from_numpy(targets.target)]
    assert torch.allclose(per_item, decoded, atol=1e-4), (per_item - decoded).abs().max()
    adapter.unload()


def test_a_later_item_never_changes_an_earlier_items_log_probability(data, task, llama_dir):
    cfg = config(llama_dir)
    adapter = _trained_looking(task, cfg, None)
    examples = task.examples_of(cfg, task.samples(cfg, "train", 2))
    batch = examples.collate([0, 1])
    decoding = task.decoding(cfg)
    changed = {k: v.clone() for k, v in batch.items()}
    length = task.code_length
    last = int(changed["labels"][0].ne(-100).nonzero().max())  # predicts the window's last code token
    span = slice(last + 2 - length, last + 2)  # the last item's code tokens
    other = next(c for c in task.code_ids if (torch.from_numpy(c) != batch["input_ids"][0, span]).all())
    changed["input_ids"][0, span] = torch.from_numpy(other)
    with torch.no_grad():
        before = supervised_log_probs(adapter.model.eval(), batch, decoding)
        after = supervised_log_probs(adapter.model.eval(), changed, decoding)
    first_window = int(batch["labels"][0].ne(-100).sum())
    earlier = first_window - length  # every token of window 0 before its last item
    assert torch.equal(before[: earlier + 1], after[: earlier + 1])  # and the last item's first token
    assert not torch.allclose(before[earlier + 1 : first_window], after[earlier + 1 : first_window])
    assert torch.equal(before[first_window:], after[first_window:])  # the other window
    adapter.unload()


@pytest.mark.parametrize("token_init", ["mean", "codebook"])
def test_sequence_runs_train_evaluate_and_evaluate_again_identically(
    data, llama_dir, tmp_path, home, token_init
):
    cfg = config(llama_dir, semantic_ids={"token_init": token_init})
    run = tmp_path / "run"
    run.mkdir()
    task = NextItemTask(data, str(llama_dir), cfg.semantic_ids, log=lambda _m: None)
    first_level = task.backbone.model.get_input_embeddings().weight[task.vocabulary.token_table[0]]
    spread = first_level.std(0).mean() / task.backbone.model.get_input_embeddings().weight.std(0).mean()
    assert (spread > 0.5) == (token_init == "codebook")  # codebook rows spread like the model's own
    summary = train_and_evaluate(task, cfg, run)
    assert summary["metrics"]["test"]["users"] == 12
    again = NextItemTask.open(cfg, data, log=lambda _m: None, run=run)
    out = tmp_path / "eval"
    out.mkdir()
    evaluated = evaluate_run(again, cfg, out, adapter_dir=run / "adapter")["metrics"]["test"]
    for key in ("hit@5", "ndcg@10", "mrr@10"):
        assert evaluated[key] == summary["metrics"]["test"][key]
    beam = evaluate(again, again.backbone.model, cfg)
    assert beam["users"] == 12


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"prompt": {"history": 9, "window": 9}}, "must be longer than prompt.history"),
        ({"adapter": {**ADAPTERS["personalized"], "mixing": "factors"}, "lens": "x"}, "use mixing: products"),
        (
            {"layout": "prompt", "prompt": {"normalise": "trie"}},
            "prompt.normalise applies to layout sequence",
        ),
    ],
)
def test_a_sequence_config_that_cannot_work_is_refused(llama_dir, sections, message):
    with pytest.raises(ValueError, match=message):
        config(llama_dir, **sections)


def test_recommend_in_the_sequence_layout_routes_every_token(data, task, llama_dir, tmp_path):
    lens = _lens(data)
    lens.save(tmp_path / "lens")
    cfg = config(llama_dir, adapter=ADAPTERS["personalized"], lens=str(tmp_path / "lens"))
    adapter = _trained_looking(task, cfg, lens)
    user = data.users["user"][0]
    top = task.recommend(adapter.model.eval(), cfg, user, 3, {})
    scores = top.table["log_prob"].to_list()
    assert top.table.height == 3 and scores == sorted(scores, reverse=True) and scores[0] < 0
    assert set(top.table["item"]) <= set(data.items["item"])
    adapter.unload()
