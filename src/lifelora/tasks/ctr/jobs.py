"""The LLM CTR jobs: zero-shot evaluation, adapter training (`lifelora train`: shared LoRA or RecLoRA's
personalized bank routed by a frozen lens) and evaluation, each writing config, metrics, predictions
and the adapter into one run directory."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lifelora.data.history import history_positions
from lifelora.data.prepared import PreparedData
from lifelora.errors import LifeloraError
from lifelora.io import write_json, write_parquet
from lifelora.llm.backbone import Backbone, load_backbone
from lifelora.llm.item_embeddings import item_embeddings
from lifelora.metrics.ctr import ctr_metrics
from lifelora.report import plot_curve
from lifelora.tasks.ctr.config import CTRConfig
from lifelora.tasks.ctr.examples import CTRExamples, subset_rows
from lifelora.tasks.ctr.prompts import PromptBuilder
from lifelora.tasks.ctr.scoring import score_prompts
from lifelora.training.loop import train_loop


class CTRSetup:
    """Everything a CTR job needs once: data, backbone, prompt builder and (for semantic) item vectors."""

    def __init__(self, cfg: CTRConfig, data: PreparedData, backbone: Backbone | None = None, log=print):
        self.data, self.log = data, log
        self.backbone = backbone or load_backbone(cfg.model, log=log)
        self.builder = PromptBuilder(
            self.backbone.tokenizer, data.name, data.users, data.items, layout=cfg.prompt.layout
        )
        self.embeddings = (
            item_embeddings(self.backbone, data, cfg.prompt.pca_dim, log=log)
            if cfg.prompt.retriever == "semantic" and cfg.prompt.history > 0
            else None
        )
        self.configure(cfg)

    def configure(self, cfg: CTRConfig) -> None:
        """Switch to another run's settings on the same data and backbone (loading its lens, if any)."""
        self.cfg, self.lens = cfg, None
        if cfg.adapter is not None and cfg.adapter.kind == "personalized":
            from lifelora.lens import Lens

            self.lens = Lens.load(cfg.lens)
            self.lens.check_matches(self.data)

    def examples(self, split: str, n: int | None) -> CTRExamples:
        samples = self.data.split(split)
        rows = subset_rows(samples.height, n, self.cfg.subset.seed)
        samples = samples[rows]
        positions = history_positions(
            self.cfg.prompt.retriever, self.data, samples, self.cfg.prompt.history, self.embeddings
        )
        return CTRExamples(self.data, self.builder, samples, positions, self.routing(split, rows))

    def routing(self, split: str, rows: np.ndarray) -> torch.Tensor | None:
        """The frozen lens's hidden vectors for these rows (None without a personalized adapter).

        The lens reads its own long history (recent or retrieved 60) over the full data; users it
        never saw get its cold-start vector (their unknown-id embedding is zero)."""
        if self.lens is None:
            return None
        _, hidden = self.lens.predict(self.lens.encode(self.data, split, rows=rows), hidden=True)
        return hidden


def answer_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Causal-LM cross-entropy on the answer token only (the prompt carries no loss)."""
    routing = {"routing": batch["routing"]} if "routing" in batch else {}
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=1,
        use_cache=False,
        **routing,
    )
    return torch.nn.functional.cross_entropy(out.logits[:, -1].float(), batch["labels"])


def evaluate_examples(model, setup: CTRSetup, examples: CTRExamples, out_dir: Path | None = None) -> dict:
    """Metrics (AUC, LogLoss, ACC, gAUC) and, with `out_dir`, a predictions Parquet."""
    start = time.perf_counter()
    tokenizer = setup.backbone.tokenizer
    prompts = examples.prompts(np.arange(len(examples)))
    scores = score_prompts(
        model,
        prompts,
        tokenizer.pad_token_id,
        setup.builder.answer_ids,
        batch_size=setup.cfg.eval.batch_size,
        precision=setup.cfg.train.precision,
        routing=examples.routing,
    )
    seconds = time.perf_counter() - start
    metrics = ctr_metrics(examples.labels, scores, examples.users)
    metrics["samples"] = len(examples)
    metrics["seconds"] = round(seconds, 2)
    metrics["tokens_per_s"] = round(sum(len(p) for p in prompts) / seconds, 1)
    if out_dir is not None:
        write_parquet(
            out_dir / f"predictions_{setup.cfg.eval.split}.parquet",
            pl.DataFrame(
                {
                    "sample_id": examples.samples["sample_id"],
                    "user_idx": examples.samples["user_idx"],
                    "label": examples.labels.astype(np.int8),
                    "score": scores,
                }
            ),
        )
    return metrics


def train_ctr(setup: CTRSetup, run_dir: Path, resume: bool = False) -> dict:
    """Few-shot adapter training on a fixed subset, then evaluation on the fixed eval subset."""
    from lifelora.adapters import attach_adapter, remove_adapter, save_adapter

    cfg = setup.cfg
    torch.manual_seed(cfg.train.seed)
    routing_dim = setup.lens.hidden_size if setup.lens is not None else None
    model = attach_adapter(setup.backbone.model, cfg.adapter, routing_dim)
    examples = setup.examples("train", cfg.subset.train)
    setup.log(
        f"training a {cfg.name} adapter on {len(examples):,} {setup.data.name} samples "
        f"(subset seed {cfg.subset.seed}), history {cfg.prompt.history} ({cfg.prompt.retriever})"
    )
    result = train_loop(
        model, examples, examples.collate, answer_loss, cfg.train, run_dir, resume=resume, log=setup.log
    )
    model = result.pop("model")
    if not result.pop("is_main_process"):
        return {}  # other processes only helped train; the main one saves and evaluates
    save_adapter(model, run_dir / "adapter")
    write_json(run_dir / "curve.json", result["curve"])
    plot_curve(
        result["curve"],
        run_dir / "curve.png",
        f"{cfg.name} on {setup.data.name}",
        x="step",
        series=(("loss", "train loss (answer CE)"), ("lr", "learning rate")),
    )
    metrics = evaluate_examples(model, setup, setup.examples(cfg.eval.split, cfg.subset.eval), run_dir)
    setup.backbone.model = remove_adapter(model)
    summary = {
        "dataset": setup.data.name,
        "model": cfg.model,
        "adapter": cfg.name,
        "train_samples": len(examples),
        "subset_seed": cfg.subset.seed,
        "train": {k: v for k, v in result.items() if k != "curve"},
        "metrics": {cfg.eval.split: metrics},
    }
    write_json(run_dir / "metrics.json", summary)
    return summary


def evaluate_ctr(setup: CTRSetup, run_dir: Path, adapter_dir: Path | None = None) -> dict:
    """Zero-shot (no adapter) or a saved adapter, on the configured eval split/subset."""
    from lifelora.adapters import load_adapter, remove_adapter

    model = setup.backbone.model
    if adapter_dir is not None:
        model = load_adapter(model, adapter_dir)
    model.eval()
    metrics = evaluate_examples(
        model, setup, setup.examples(setup.cfg.eval.split, setup.cfg.subset.eval), run_dir
    )
    setup.backbone.model = remove_adapter(model)
    summary = {
        "dataset": setup.data.name,
        "model": setup.cfg.model,
        "adapter": str(adapter_dir) if adapter_dir else "zero-shot",
        "metrics": {setup.cfg.eval.split: metrics},
    }
    write_json(run_dir / "metrics.json", summary)
    return summary


def recommend(
    setup: CTRSetup, model, user: int, candidates: np.ndarray, k: int, batch_size: int = 32
) -> pl.DataFrame:
    """Top-k of `candidates` for a user, scored with the shared prefix computed once.

    The text history is the user's most recent K items (it must not depend on the candidate for the
    prefix to be shared)."""
    from lifelora.tasks.ctr.scoring import score_candidates

    if setup.lens is not None:
        raise LifeloraError(
            "recommend does not rank with a personalized adapter yet: its routing depends on each "
            "candidate, so the prompt prefix cannot be shared; use `lifelora evaluate` to score samples"
        )

    data, builder = setup.data, setup.builder
    row = data.users.row(user, named=True)
    length = int(row["seq_len"])
    start = max(0, length - setup.cfg.prompt.history)
    seq = data.sequences.slice(int(row["seq_offset"]) + start, length - start)
    prefix = builder.encode_prefixes(
        np.array([user]), [seq["item_idx"].to_numpy()], [seq["rating"].to_numpy()]
    )[0]
    continuations = [t + builder.suffix_ids for t in builder.encode_targets(candidates)]
    scores = score_candidates(
        model,
        prefix,
        continuations,
        setup.backbone.tokenizer.pad_token_id,
        builder.answer_ids,
        batch_size=batch_size,
        precision=setup.cfg.train.precision,
    )
    top = np.argsort(-scores, kind="stable")[:k]
    return pl.DataFrame(
        {
            "rank": np.arange(1, len(top) + 1),
            "item_idx": candidates[top],
            "title": [builder.titles[int(c)] for c in candidates[top]],
            "score": scores[top],
        }
    )


def export_user(setup: CTRSetup, model, user: int, split: str, out: Path, item: int | None = None) -> dict:
    """One instance's personalized LoRA as a plain PEFT adapter directory.

    The routing vector belongs to an instance (a user with a target item and a history), so the
    instance is the user's latest sample in `split`, or the latest one with `item` as target."""
    samples = setup.data.split(split)
    mask = samples["user_idx"].to_numpy() == user
    if item is not None:
        mask &= samples["item_idx"].to_numpy() == item
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        target = "" if item is None else f" with target item {setup.builder.titles[item]!r}"
        name = setup.data.users["user"][user]
        raise LifeloraError(f"user {name!r} has no sample in the {split} split{target}")
    row = rows[-1:]  # samples are in time order: the latest
    model.export_instance(setup.routing(split, row)[0], out, base_model_name=setup.backbone.name)
    sample = samples.row(int(row[0]), named=True)
    return {
        "split": split,
        "row": int(row[0]),
        "item": setup.builder.titles[sample["item_idx"]],
        "out": str(out),
    }
