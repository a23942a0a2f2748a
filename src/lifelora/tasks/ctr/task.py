"""Click-through as a task: what every click-through job on one dataset and one backbone shares (the
data, the backbone, prompt builders and item vectors, made once and never changed by a run) and what the
task protocol asks of it. A run's settings (its `CTRConfig`) are passed to each call instead, so one
`CTRTask` serves any number of runs, in any order."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lifelora import distributed
from lifelora.data.history import history_positions
from lifelora.data.periods import sample_periods
from lifelora.data.prepared import PreparedData
from lifelora.errors import LifeloraError
from lifelora.io import write_parquet
from lifelora.lens import DINLens
from lifelora.lens.periods import ClickLenses, PeriodLenses
from lifelora.llm.backbone import Backbone, load_backbone
from lifelora.llm.item_embeddings import item_embeddings
from lifelora.llm.logits import next_token_loss
from lifelora.metrics.ctr import ctr_metrics
from lifelora.metrics.intervals import paired_auc_difference
from lifelora.report import METRIC_ORDER
from lifelora.tasks.base import Recommendation, SampleRows, Task
from lifelora.tasks.ctr.config import CTRConfig, PromptSettings
from lifelora.tasks.ctr.examples import CTRExamples
from lifelora.tasks.ctr.prompts import PromptBuilder
from lifelora.tasks.ctr.ranking import (
    candidate_scores,
    popular_candidates,
    rank_candidates,
    sample_candidates,
)
from lifelora.tasks.ctr.scoring import score_prompts

SPLIT_SHARES = (0.8, 0.1, 0.1)  # a period's samples in time order: train / valid / test


answer_loss = next_token_loss  # the answer token ("Yes" / "No") after the prompt carries the only loss


class CTRTask(SampleRows, Task):
    name = "ctr"
    config_class = CTRConfig
    loss_name = "answer CE"
    columns = METRIC_ORDER
    headline = ("AUC", "LogLoss")
    learns_from_negatives = True  # labels come from ratings: a skipped item is a "no"

    def __init__(self, data: PreparedData, backbone: Backbone | str, log=print):
        self.data, self.log = data, log
        self.backbone = load_backbone(backbone, log=log) if isinstance(backbone, str) else backbone
        self._builders: dict[str, PromptBuilder] = {}
        self._embeddings: dict[int, np.ndarray] = {}

    @classmethod
    def open(cls, cfg: CTRConfig, data: PreparedData, log=print, run: Path | None = None) -> CTRTask:
        return cls(data, cfg.model, log=log)

    def builder(self, layout: str) -> PromptBuilder:
        if layout not in self._builders:
            self._builders[layout] = PromptBuilder(
                self.backbone.tokenizer, self.data.name, self.data.users, self.data.items, layout=layout
            )
        return self._builders[layout]

    def embeddings(self, prompt: PromptSettings) -> np.ndarray | None:
        """Item vectors for semantic retrieval (None when the prompt shows no retrieved history).

        They are the bare backbone's: `before_adapter` makes them before an adapter goes on."""
        if prompt.retriever != "semantic" or prompt.history == 0:
            return None
        if prompt.pca_dim not in self._embeddings:
            self._embeddings[prompt.pca_dim] = item_embeddings(
                self.backbone, self.data, prompt.pca_dim, log=self.log
            )
        return self._embeddings[prompt.pca_dim]

    def before_adapter(self, cfg: CTRConfig) -> None:
        self.embeddings(cfg.prompt)

    def load_lens(self, path: Path) -> DINLens:
        return DINLens.load(path)

    def lens_from_config(self, config: str | None) -> DINLens:
        from lifelora.config import load_config
        from lifelora.lens.din.config import LensConfig

        return DINLens.create(load_config(LensConfig, config, [f"dataset={self.data.name}"]), self.data)

    def describe(self, cfg: CTRConfig) -> str:
        return f", history {cfg.prompt.history} ({cfg.prompt.retriever})"

    def samples(self, cfg: CTRConfig, split: str, n: int | None) -> pl.DataFrame:
        return self.subset(cfg, self.data.split(split), n, cfg.subset.seed)

    def examples_of(self, cfg: CTRConfig, samples: pl.DataFrame, lens: DINLens | None = None) -> CTRExamples:
        """Prompts for any rows of the samples table, with the lens's routing vectors when one is given."""
        positions = history_positions(
            cfg.prompt.retriever, self.data, samples, cfg.prompt.history, self.embeddings(cfg.prompt)
        )
        routing = None if lens is None else lens.routing(self.data, samples)
        return CTRExamples(self.data, self.builder(cfg.prompt.layout), samples, positions, routing)

    def loss(self, cfg: CTRConfig):
        return answer_loss

    def evaluate_examples(
        self, model: torch.nn.Module, cfg: CTRConfig, examples: CTRExamples, out_dir: Path | None, name: str
    ) -> tuple[dict, np.ndarray]:
        """AUC, LogLoss, ACC and gAUC and every row's P(yes); with `out_dir`, `predictions_{name}.parquet`."""
        start = time.perf_counter()
        prompts = examples.prompts(np.arange(len(examples)))
        scores = score_prompts(
            model,
            prompts,
            self.backbone.tokenizer.pad_token_id,
            examples.builder.answer_ids,
            batch_size=cfg.eval.batch_size,
            precision=cfg.scoring_precision,
            routing=examples.routing,
        )
        seconds = time.perf_counter() - start
        metrics = ctr_metrics(examples.labels, scores, examples.users)
        metrics["samples"] = len(examples)
        metrics["seconds"] = round(seconds, 2)
        metrics["tokens_per_s"] = round(sum(len(p) for p in prompts) / seconds, 1)
        if out_dir is not None and distributed.is_main_process():
            write_parquet(
                out_dir / f"predictions_{name}.parquet",
                pl.DataFrame(
                    {
                        "sample_id": examples.samples["sample_id"],
                        "user_idx": examples.samples["user_idx"],
                        "label": examples.labels.astype(np.int8),
                        "score": scores,
                    }
                ),
            )
        return metrics, scores

    def group_metrics(
        self, cfg: CTRConfig, samples: pl.DataFrame, outcome: np.ndarray, mask: np.ndarray
    ) -> dict | None:
        labels = samples["label"].to_numpy()[mask]
        if len(np.unique(labels)) < 2:
            return None  # AUC is undefined on one label
        return ctr_metrics(labels, outcome[mask], samples["user_idx"].to_numpy()[mask])

    def recommend(
        self, model: torch.nn.Module, cfg: CTRConfig, user: str, k: int, options: dict
    ) -> Recommendation:
        """The top-`k` of `options["items"]` (raw ids, comma-separated) or of `options["candidates"]` items
        the user has not rated: the most popular with `options["pool"] == "popular"` (the server), else
        random ones (seed `options["seed"]`)."""
        user_idx = self.data.user_index(user)
        items = options.get("items")
        if items:
            keys = [key.strip() for key in items.split(",") if key.strip()]
            pool = self.data.item_indices(keys, "--items")
        elif options.get("pool") == "popular":
            pool = popular_candidates(self.data, user_idx, options.get("candidates", 100))
        else:
            pool = sample_candidates(
                self.data, user_idx, options.get("candidates", 100), options.get("seed", 0)
            )
        top = rank_candidates(self, model, cfg, user_idx, pool, k)
        return Recommendation(top, f"top {k} of {len(pool)} for user {user} ({self.data.name})", "score")

    def paired_difference(self, ours: Path, theirs: Path, name: str, metric: str) -> dict | None:
        """AUC only: DeLong's paired test on the rows both scored."""
        if metric != "AUC":
            return None
        file = f"predictions_{name}.parquet"
        both = pl.read_parquet(ours / file).join(
            pl.read_parquet(theirs / file).select("sample_id", "score"), on="sample_id", suffix="_theirs"
        )
        labels = both["label"].to_numpy()
        if both.height < 2 or labels.min() == labels.max():
            return None
        return paired_auc_difference(labels, both["score"].to_numpy(), both["score_theirs"].to_numpy())

    def score_items(
        self, model: torch.nn.Module, cfg: CTRConfig, user: str, items: Sequence[str]
    ) -> np.ndarray:
        """P(yes) of each of `items` (raw ids, in the given order) for one user."""
        index = {item: i for i, item in enumerate(self.data.items["item"].to_list())}
        unknown = [item for item in items if item not in index]
        if unknown:
            raise LifeloraError(f"items: {unknown[0]!r} is not an item of {self.data.name}")
        pool = np.array([index[item] for item in items], dtype=np.int64)
        return candidate_scores(self, model, cfg, self.data.user_index(user), pool)

    # --- periods ----------------------------------------------------------------------------------------

    def period_samples(self, periods: np.ndarray, period: int, split: str) -> pl.DataFrame:
        """A period's samples in time order: the first 80% train, the next 10% validate, the last 10% test."""
        rows = np.flatnonzero(sample_periods(self.data, None, periods) == period)
        ends = np.floor(np.cumsum(SPLIT_SHARES) * len(rows)).astype(np.int64)
        part = {"train": rows[: ends[0]], "valid": rows[ends[0] : ends[1]], "test": rows[ends[1] :]}[split]
        return self.data.samples[part]

    def period_lenses(
        self, periods: np.ndarray, mode: str, named: DINLens, directory: Path, log
    ) -> PeriodLenses:
        return ClickLenses(self.data, partial(self.period_samples, periods), mode, named, directory, log)
