"""The next-item jobs, in the same three steps as click-through: `build` attaches a fresh adapter (LoRA
plus the code tokens' rows), `fit` trains it on the response tokens, `evaluate` decodes every evaluated
user's next item (trie-constrained beam search, or the exact ranking of every item) and scores the
ranked lists. `train_and_evaluate` and `evaluate_run` are the commands' jobs, writing config, codes,
metrics, ranked lists and the adapter into one run directory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lifelora import distributed
from lifelora.adapters import Adapter, attach, load
from lifelora.errors import LifeloraError
from lifelora.io import write_json, write_parquet
from lifelora.lens.sasrec import SASRecLens
from lifelora.llm.logits import tail_logits
from lifelora.metrics.ranking import NOT_FOUND, ranking_metrics, ranks_from_lists, target_ranks
from lifelora.precision import run_precisions
from lifelora.report import plot_curve
from lifelora.tasks.next_item.config import NextItemConfig
from lifelora.tasks.next_item.decoding import beam_search, exact_scores
from lifelora.tasks.next_item.examples import NextItemExamples
from lifelora.tasks.next_item.task import NextItemTask
from lifelora.training import TrainHook, train_model

CODES_DIR = "semantic_ids"


def code_loss(model: torch.nn.Module, batch: dict, temperature: float = 0.8) -> torch.Tensor:
    """Cross-entropy of the target's code tokens (the prompt carries no loss) on fp32 logits / T.

    Batches are left-padded, so the response is the last L columns, predicted by the L columns before."""
    labels = batch["labels"]
    routing = {"routing": batch["routing"]} if "routing" in batch else {}
    logits = tail_logits(
        model,
        labels.shape[1] + 1,
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
        **routing,
    )[:, :-1]
    return torch.nn.functional.cross_entropy(
        (logits / temperature).reshape(-1, logits.shape[-1]), labels.reshape(-1)
    )


def _adapter_config(task: NextItemTask, cfg: NextItemConfig):
    """The run's adapter config with the code tokens' rows (or the whole embedding and head) trained."""
    if cfg.token_rows == "new":
        return cfg.adapter.model_copy(update={"trainable_token_indices": task.token_rows()})
    if cfg.adapter.kind != "lora":
        raise LifeloraError("token_rows: all (the whole embedding and LM head) needs adapter kind lora")
    return cfg.adapter.model_copy(update={"modules_to_save": ["embed_tokens", "lm_head"]})


def build(task: NextItemTask, cfg: NextItemConfig, lens: SASRecLens | None = None) -> Adapter:
    """A fresh adapter on the task's backbone, initialised from `cfg.train.seed`."""
    if cfg.adapter is None:
        raise LifeloraError("adapter: null means no training; there is no adapter to build")
    lens = lens or task.lens(cfg)
    torch.manual_seed(cfg.train.seed)
    config = _adapter_config(task, cfg)
    return attach(task.backbone.model, config, lens.hidden_size if lens is not None else None)


def fit(
    task: NextItemTask,
    adapter: Adapter,
    cfg: NextItemConfig,
    run_dir: Path,
    resume: bool = False,
    lens: SASRecLens | None = None,
    hooks: Sequence[TrainHook] = (),
    stage: str | None = None,
    examples: NextItemExamples | None = None,
) -> dict:
    """Train the adapter on `examples` (default: the fixed training subset); it stays attached and
    trained for the caller."""
    from accelerate.utils import set_seed

    lens = lens or task.lens(cfg)
    if examples is None:
        examples = task.examples(cfg, "train", cfg.subset.train, lens)
    task.log(
        f"training a {cfg.name} adapter on {len(examples):,} {task.data.name} next-item targets"
        f"{f' ({stage})' if stage else ''}, history {cfg.prompt.history}, codes of {task.code_length} tokens"
    )
    set_seed(cfg.train.seed)
    result = train_model(
        adapter.model,
        examples,
        examples.collate,
        partial(code_loss, temperature=cfg.prompt.temperature),
        cfg.train,
        run_dir,
        resume=resume,
        hooks=hooks,
        stage=stage,
        log=task.log,
    )
    result.pop("model", None)
    return {**result, "train_samples": len(examples)}


@torch.no_grad()
def decode(
    task: NextItemTask, model: torch.nn.Module, cfg: NextItemConfig, examples: NextItemExamples
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ranked item_idx [n, K], their log-probabilities [n, K], the target's rank [n]) per user."""
    prompts = examples.prompts(np.arange(len(examples)))
    common = dict(
        pad_id=task.backbone.tokenizer.pad_token_id,
        temperature=cfg.prompt.temperature,
        batch_size=cfg.eval.batch_size,
        precision=cfg.scoring_precision,
        routing=examples.routing,
    )
    if cfg.eval.decoding == "beam":
        items, scores = beam_search(
            model, prompts, task.trie, task.vocabulary.token_table, beams=cfg.eval.beams, **common
        )
        items, scores = items.numpy(), scores.numpy()
        return items, scores, ranks_from_lists(items, examples.targets)
    full = exact_scores(model, prompts, task.trie, task.vocabulary.token_table, **common).numpy()
    top = np.argsort(-full, axis=1, kind="stable")[:, : cfg.eval.top_k]
    return top, np.take_along_axis(full, top, axis=1), target_ranks(full, examples.targets)


def evaluate(
    task: NextItemTask,
    model: torch.nn.Module,
    cfg: NextItemConfig,
    out_dir: Path | None = None,
    lens: SASRecLens | None = None,
) -> dict:
    """Hit/NDCG@K and MRR of the evaluated users' next item; with `out_dir`, their ranked lists."""
    lens = lens or task.lens(cfg)
    examples = task.examples(cfg, cfg.eval.split, cfg.subset.eval, lens)
    metrics, _ = evaluate_examples(task, model, cfg, examples, out_dir)
    return metrics


def evaluate_examples(
    task: NextItemTask,
    model: torch.nn.Module,
    cfg: NextItemConfig,
    examples: NextItemExamples,
    out_dir: Path | None = None,
    name: str | None = None,
) -> tuple[dict, np.ndarray]:
    """The metrics and every target's rank (`NOT_FOUND` past a beam's list) for any set of targets; with
    `out_dir`, the ranked lists as `ranked_{name}.parquet` (default name: the evaluated split)."""
    model.eval()
    start = time.perf_counter()
    items, scores, ranks = decode(task, model, cfg, examples)
    seconds = time.perf_counter() - start
    cutoff = cfg.eval.beams if cfg.eval.decoding == "beam" else None  # a beam's misses have no rank
    metrics = ranking_metrics(ranks, ks=tuple(cfg.eval.ks), cutoff=cutoff)
    metrics.update(decoding=cfg.eval.decoding, seconds=round(seconds, 2))
    metrics["users_per_s"] = round(len(examples) / seconds, 2)
    if cfg.eval.decoding == "beam":
        metrics["beams"] = cfg.eval.beams
    if out_dir is not None and distributed.is_main_process():
        write_parquet(
            out_dir / f"ranked_{name or cfg.eval.split}.parquet",
            ranked_lists(task, examples, items, scores, ranks),
        )
    return metrics, ranks


def ranked_lists(
    task: NextItemTask, examples: NextItemExamples, items: np.ndarray, scores: np.ndarray, ranks: np.ndarray
) -> pl.DataFrame:
    """One row per evaluated user: user and item ids (raw), the target and its 0-based rank (null: not
    in a beam's list), the ranked items and their log-probabilities."""
    raw_items = task.data.items["item"].to_numpy()
    return pl.DataFrame(
        {
            "user_idx": examples.samples.user_idx,
            "user": task.data.users["user"].to_numpy()[examples.samples.user_idx],
            "rank": pl.Series(ranks).set(pl.Series(ranks == NOT_FOUND), None),
            "target": raw_items[examples.targets],
            "ranked": [[raw_items[i] for i in row if i >= 0] for row in items],
            "scores": [row[row > -np.inf].tolist() for row in scores],
        }
    )


def _summary(task: NextItemTask, cfg: NextItemConfig, adapter: str, metrics: dict, **extra) -> dict:
    return {
        "task": "next-item",
        "dataset": task.data.name,
        "model": cfg.model,
        "adapter": adapter,
        "codes": {"level_sizes": task.codes.level_sizes, **task.codes.stats},
        **run_precisions(cfg.train.precision, cfg.scoring_precision, task.backbone.device),
        **extra,
        "metrics": {cfg.eval.split: metrics},
    }


def train_and_evaluate(task: NextItemTask, cfg: NextItemConfig, run_dir: Path, resume: bool = False) -> dict:
    """`lifelora train --task next-item`: build, fit, save the adapter and the codes, evaluate."""
    adapter = build(task, cfg)
    main = distributed.is_main_process()
    try:
        result = fit(task, adapter, cfg, run_dir, resume=resume)
        if main:
            adapter.save(run_dir / "adapter")
            task.codes.save(run_dir / CODES_DIR)
            write_json(run_dir / "curve.json", result["curve"])
            plot_curve(
                result["curve"],
                run_dir / "curve.png",
                f"{cfg.name} next-item on {task.data.name}",
                x="step",
                series=(("loss", "train loss (code CE)"), ("lr", "learning rate")),
            )
        with adapter.merged():
            metrics = evaluate(task, adapter.model, cfg, run_dir)
    finally:
        adapter.unload()
    train = {k: v for k, v in result.items() if k not in ("curve", "is_main_process", "train_samples")}
    summary = _summary(
        task,
        cfg,
        cfg.name,
        metrics,
        train_samples=result["train_samples"],
        subset_seed=cfg.subset.seed,
        train=train,
    )
    if main:
        write_json(run_dir / "metrics.json", summary)
    return summary


def evaluate_run(
    task: NextItemTask, cfg: NextItemConfig, run_dir: Path, adapter_dir: Path | None = None
) -> dict:
    """`lifelora evaluate --task next-item`: the backbone with code tokens only, or a saved adapter."""
    adapter = load(task.backbone.model, adapter_dir) if adapter_dir is not None else None
    try:
        if adapter is None:
            metrics = evaluate(task, task.backbone.model, cfg, run_dir)
        else:
            with adapter.merged():
                metrics = evaluate(task, adapter.model, cfg, run_dir)
    finally:
        if adapter is not None:
            adapter.unload()
    summary = _summary(task, cfg, str(adapter_dir) if adapter_dir else "no-training", metrics)
    if distributed.is_main_process():
        task.codes.save(run_dir / CODES_DIR)
        write_json(run_dir / "metrics.json", summary)
    return summary


@torch.no_grad()
def recommend(
    task: NextItemTask, model: torch.nn.Module, cfg: NextItemConfig, user: str, k: int
) -> pl.DataFrame:
    """The top-`k` next items for one user (raw id) from all of their history, by beam search."""
    from lifelora.data.sequential import NextItemSamples

    user_idx = task.data.user_index(user)
    length = int(task.data.users["seq_len"][user_idx])
    if length == 0:
        raise LifeloraError(f"user {user!r} has no interactions in {task.data.name}")
    samples = NextItemSamples("recommend", np.array([user_idx]), np.array([length]), np.array([-1]))
    lens = task.lens(cfg)
    routing = None if lens is None else lens.user_vectors(task.data, samples)
    prompt = task.builder.encode([_history(task, samples, cfg.prompt.history)])
    items, scores = beam_search(
        model,
        prompt,
        task.trie,
        task.vocabulary.token_table,
        pad_id=task.backbone.tokenizer.pad_token_id,
        beams=max(k, cfg.eval.beams),
        temperature=cfg.prompt.temperature,
        precision=cfg.scoring_precision,
        routing=routing,
    )
    keep = items[0] >= 0
    top = items[0][keep][:k].numpy()
    return pl.DataFrame(
        {
            "rank": np.arange(1, len(top) + 1),
            "item": task.data.items["item"].to_numpy()[top],
            "title": task.titles(top),
            "log_prob": scores[0][keep][:k].numpy(),
        }
    )


def _history(task: NextItemTask, samples, length: int) -> np.ndarray:
    from lifelora.data.sequential import history_window

    window = history_window(task.data, samples, length)
    return window.items[0][window.mask[0]]
