"""Generative next-item recommendation as a task: what every next-item job on one dataset and one
backbone shares (the items' semantic-ID codes, made once from the bare backbone's item vectors, their
tokens in the vocabulary, the trie of valid codes, the prompt builder and the lenses) and what the task
protocol asks of it. A run's settings are passed to each call, never stored."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import torch

from lifelora import distributed
from lifelora.adapters import is_routed
from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import NextItemSamples, block_leave_one_out, leave_one_out, seen_before
from lifelora.errors import LifeloraError
from lifelora.io import write_parquet
from lifelora.lens.periods import PeriodLenses, SequenceLenses
from lifelora.lens.sasrec import SASRecLens
from lifelora.llm.backbone import Backbone, load_backbone
from lifelora.llm.item_text import item_titles
from lifelora.llm.logits import tail_logits, training_inputs
from lifelora.llm.vocabulary import add_code_tokens
from lifelora.metrics.intervals import paired_mean_difference
from lifelora.metrics.ranking import NOT_FOUND, metric_gains, ranking_metrics, ranks_from_lists, target_ranks
from lifelora.report import NEXT_ITEM_COLUMNS
from lifelora.tasks.base import Recommendation, Task
from lifelora.tasks.next_item.code_scores import CodeDecoding
from lifelora.tasks.next_item.config import NextItemConfig
from lifelora.tasks.next_item.decoding import beam_search, exact_scores
from lifelora.tasks.next_item.examples import NextItemExamples, PromptBuilder
from lifelora.tasks.next_item.semantic_ids import ItemCodes, SemanticIdConfig, item_codes
from lifelora.tasks.next_item.sequence import (
    SequenceBuilder,
    WindowExamples,
    plan_windows,
    sequence_loss,
    token_routing,
)
from lifelora.tasks.next_item.trie import CodeTrie
from lifelora.tasks.subsets import subset_rows

_NORMALISE = {"level": "codes", "trie": "trie"}  # prompt.normalise → CodeDecoding.normalise
CODES_DIR = "semantic_ids"  # where a run keeps the item codes its adapter was trained with


def code_loss(model: torch.nn.Module, batch: dict, temperature: float = 0.8) -> torch.Tensor:
    """Cross-entropy of the target's code tokens (the prompt carries no loss) on fp32 logits / T.

    Batches are left-padded, so the response is the last L columns, predicted by the L columns before."""
    labels = batch["labels"]
    logits = tail_logits(model, labels.shape[1] + 1, **training_inputs(batch))[:, :-1]
    return torch.nn.functional.cross_entropy(
        (logits / temperature).reshape(-1, logits.shape[-1]), labels.reshape(-1)
    )


class NextItemTask(Task):
    name = "next-item"
    config_class = NextItemConfig
    label = "next-item"
    unit = "next-item targets"
    loss_name = "code CE"
    columns = NEXT_ITEM_COLUMNS
    headline = ("ndcg@10", "hit@10", "ndcg@5", "hit@5")
    recommends_together = True  # one beam search over every user's prompt
    evaluate_merged = True
    options: ClassVar[dict[str, str]] = {"decoding": "eval.decoding"}
    continual_baselines: ClassVar[tuple[str, ...]] = ("popularity", "sasrec")

    def __init__(
        self,
        data: PreparedData,
        backbone: Backbone | str,
        semantic_ids: SemanticIdConfig | ItemCodes | None = None,
        log=print,
    ):
        """`semantic_ids`: a config (codes made or read from the cache) or the codes of a saved run."""
        self.data, self.log = data, log
        self.backbone = load_backbone(backbone, log=log) if isinstance(backbone, str) else backbone
        if isinstance(semantic_ids, ItemCodes):
            semantic_ids.check_matches(data)
            self.codes = semantic_ids
        else:
            self.codes = item_codes(self.backbone, data, semantic_ids or SemanticIdConfig(), log=log)
        centroids = self.codes.centroids() if self.codes.config.token_init == "codebook" else None
        self.vocabulary = add_code_tokens(
            self.backbone.tokenizer, self.backbone.model, self.codes.level_sizes, centroids=centroids
        )
        self.trie = CodeTrie(
            self.codes.codes, self.codes.level_sizes, shared=self.codes.config.quantizer == "given"
        )
        self.code_ids = self.vocabulary.tokens_of(self.codes.codes)
        self.builder = PromptBuilder(
            self.backbone.tokenizer, [self.vocabulary.text_of(code) for code in self.codes.codes]
        )
        self.sequence_builder = SequenceBuilder(self.backbone.tokenizer, self.code_ids)

    @classmethod
    def open(
        cls, cfg: NextItemConfig, data: PreparedData, log=print, run: Path | None = None
    ) -> NextItemTask:
        """With `run`, the item codes that run was trained with, else those of `cfg.semantic_ids`."""
        codes = ItemCodes.load(run / CODES_DIR) if run is not None else cfg.semantic_ids
        return cls(data, cfg.model, codes, log=log)

    @property
    def code_length(self) -> int:
        return self.codes.codes.shape[1]

    def load_lens(self, path: Path) -> SASRecLens:
        return SASRecLens.load(path)

    def lens_from_config(self, config: str | None) -> SASRecLens:
        from lifelora.config import load_config
        from lifelora.lens.sasrec.config import SASRecConfig

        return SASRecLens.create(load_config(SASRecConfig, config, [f"dataset={self.data.name}"]), self.data)

    def adapter_config(self, cfg: NextItemConfig):
        """The run's adapter with the code tokens' rows (or the whole embedding and head) trained."""
        if cfg.token_rows == "new":
            return cfg.adapter.model_copy(
                update={"trainable_token_indices": list(self.vocabulary.new_token_ids)}
            )
        if is_routed(cfg.adapter):
            raise LifeloraError("token_rows: all (the whole embedding and LM head) needs adapter kind lora")
        return cfg.adapter.model_copy(update={"modules_to_save": ["embed_tokens", "lm_head"]})

    def describe(self, cfg: NextItemConfig) -> str:
        window = f", windows of ≤ {cfg.prompt.window} items" if cfg.layout == "sequence" else ""
        return (
            f", {cfg.layout} layout, history {cfg.prompt.history}{window}, codes of {self.code_length} tokens"
        )

    def amount(self, examples: NextItemExamples | WindowExamples) -> str:
        if isinstance(examples, WindowExamples):
            return f"{len(examples):,} {self.data.name} windows ({examples.n_targets:,} {self.unit})"
        return super().amount(examples)

    def samples(self, cfg: NextItemConfig, split: str, n: int | None) -> NextItemSamples:
        """A fixed seeded subset of `n` targets of `split` (one per user for valid and test; in the
        sequence layout, the targets of `n` training windows)."""
        return self.subset(cfg, leave_one_out(self.data, split), n, cfg.subset.seed)

    def subset(
        self, cfg: NextItemConfig, samples: NextItemSamples, n: int | None, seed: int
    ) -> NextItemSamples:
        """Training targets in the sequence layout are drawn a window at a time: `n` counts windows."""
        if cfg.layout != "sequence" or samples.split != "train" or n is None:
            return super().subset(cfg, samples, n, seed)
        windows = plan_windows(samples, cfg.prompt.history, cfg.prompt.window)
        return windows.subset(subset_rows(len(windows), n, seed)).targets

    def examples_of(
        self, cfg: NextItemConfig, samples: NextItemSamples, lens: SASRecLens | None = None
    ) -> NextItemExamples | WindowExamples:
        """Examples of any set of targets (a split's, a continual period's, several periods' together):
        in the sequence layout, training targets as windows and the others as sequence prompts."""
        route = None if lens is None else partial(lens.routing, self.data)
        if cfg.layout == "sequence" and samples.split == "train":
            windows = plan_windows(samples, cfg.prompt.history, cfg.prompt.window)
            return WindowExamples(self.data, windows, self.sequence_builder, route)
        sequence = cfg.layout == "sequence"
        examples = NextItemExamples(
            self.data,
            samples,
            self.sequence_builder if sequence else self.builder,
            self.code_ids,
            cfg.prompt.history,
            routing=None if route is None else route(samples),
        )
        if sequence and route is not None:
            examples.token_routing = self._token_routing(route, samples, examples.histories)
        return examples

    def _token_routing(
        self, route, samples: NextItemSamples, histories: list[np.ndarray]
    ) -> list[torch.Tensor]:
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        starts = samples.position - lengths
        return token_routing(route, self.sequence_builder, samples.user_idx, starts, samples.position)

    def decoding(self, cfg: NextItemConfig) -> CodeDecoding:
        """How the run's item codes are decoded: normalised as its layout's loss is."""
        return CodeDecoding(
            self.trie,
            self.vocabulary.token_table,
            self.backbone.tokenizer.pad_token_id,
            temperature=cfg.prompt.temperature,
            normalise=_NORMALISE[cfg.prompt.normalise] if cfg.layout == "sequence" else "vocabulary",
            batch_size=cfg.eval.batch_size,
            precision=cfg.scoring_precision,
        )

    def loss(self, cfg: NextItemConfig):
        if cfg.layout == "sequence":
            return partial(sequence_loss, decoding=self.decoding(cfg))
        return partial(code_loss, temperature=cfg.prompt.temperature)

    def titles(self, items: np.ndarray) -> list[str]:
        return [item_titles(self.data.items[[int(i)]])[0] for i in items]

    # --- evaluation -------------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(
        self, model: torch.nn.Module, cfg: NextItemConfig, examples: NextItemExamples
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ranked item_idx [n, K], their log-probabilities [n, K], the target's rank [n]) per user."""
        prompts = examples.prompts(np.arange(len(examples)))
        decoding = self.decoding(cfg)
        routing = dict(routing=examples.routing, token_routing=examples.token_routing)
        targets = self.trie.representative[examples.targets]  # an item sharing a code is that code's
        seen = self.seen_items(examples.samples) if cfg.eval.seen == "remove" else None
        if cfg.eval.decoding == "beam":
            items, scores = beam_search(
                model, prompts, decoding, beams=cfg.eval.beams, exclude=seen, **routing
            )
            items, scores = items.numpy(), scores.numpy()
            return items, scores, ranks_from_lists(items, targets)
        full = exact_scores(model, prompts, decoding, **routing).numpy()
        for row, items in enumerate(seen or []):
            full[row, items] = -np.inf
        full[:, self.trie.representative != np.arange(self.trie.n_items)] = -np.inf
        top = np.argsort(-full, axis=1, kind="stable")[:, : cfg.eval.top_k]
        return top, np.take_along_axis(full, top, axis=1), target_ranks(full, targets)

    def seen_items(self, samples: NextItemSamples) -> list[np.ndarray]:
        """Each sample's user's items before its target, less the target (as full ranking removes them)."""
        rows, items = seen_before(self.data, samples)
        keep = items != samples.target[rows]
        rows, items = rows[keep], items[keep]
        return np.split(items, np.searchsorted(rows, np.arange(1, len(samples))))

    def evaluate_examples(
        self, model: torch.nn.Module, cfg: NextItemConfig, examples: NextItemExamples, out_dir: Path | None,
        name: str,
    ) -> tuple[dict, np.ndarray]:  # fmt: skip
        """Hit/NDCG@K and MRR, and every target's rank (`NOT_FOUND` past a beam's list); with `out_dir`,
        the ranked lists as `ranked_{name}.parquet`."""
        model.eval()
        start = time.perf_counter()
        items, scores, ranks = self.decode(model, cfg, examples)
        seconds = time.perf_counter() - start
        metrics = ranking_metrics(ranks, ks=tuple(cfg.eval.ks), cutoff=self._cutoff(cfg))
        metrics.update(decoding=cfg.eval.decoding, seen=cfg.eval.seen, seconds=round(seconds, 2))
        metrics["users_per_s"] = round(len(examples) / seconds, 2)
        if cfg.eval.decoding == "beam":
            metrics["beams"] = cfg.eval.beams
        if out_dir is not None and distributed.is_main_process():
            write_parquet(
                out_dir / f"ranked_{name}.parquet", self.ranked_lists(examples, items, scores, ranks)
            )
        return metrics, ranks

    def paired_difference(self, ours: Path, theirs: Path, name: str, metric: str) -> dict | None:
        """hit@K / ndcg@K: the paired mean difference over the users both were tested on."""
        if not metric.startswith(("hit@", "ndcg@")):
            return None
        file = f"ranked_{name}.parquet"
        both = (
            pl.read_parquet(ours / file)
            .select("user_idx", "rank")
            .join(pl.read_parquet(theirs / file).select("user_idx", "rank"), on="user_idx", suffix="_theirs")
        )
        if both.height < 2:
            return None
        ranks = [both[c].fill_null(NOT_FOUND).to_numpy() for c in ("rank", "rank_theirs")]
        return paired_mean_difference(*(metric_gains(r, metric) for r in ranks))

    @staticmethod
    def _cutoff(cfg: NextItemConfig) -> int | None:
        return cfg.eval.beams if cfg.eval.decoding == "beam" else None  # a beam's misses have no rank

    def group_metrics(
        self, cfg: NextItemConfig, samples: NextItemSamples, outcome: np.ndarray, mask: np.ndarray
    ) -> dict | None:
        sub = ranking_metrics(outcome[mask], ks=tuple(cfg.eval.ks), cutoff=self._cutoff(cfg))
        return {k: v for k, v in sub.items() if not k.startswith("recall")}

    def ranked_lists(
        self, examples: NextItemExamples, items: np.ndarray, scores: np.ndarray, ranks: np.ndarray
    ) -> pl.DataFrame:
        """One row per evaluated user: user and item ids (raw), the target and its 0-based rank (null: not
        in a beam's list), the ranked items and their log-probabilities."""
        raw_items = self.data.items["item"].to_numpy()
        return pl.DataFrame(
            {
                "user_idx": examples.samples.user_idx,
                "user": self.data.users["user"].to_numpy()[examples.samples.user_idx],
                "rank": pl.Series(ranks).set(pl.Series(ranks == NOT_FOUND), None),
                "target": raw_items[examples.targets],
                "ranked": [[raw_items[i] for i in row if i >= 0] for row in items],
                "scores": [row[row > -np.inf].tolist() for row in scores],
            }
        )

    def run_summary(self, cfg: NextItemConfig) -> dict:
        return {"codes": {"level_sizes": self.codes.level_sizes, **self.codes.stats}}

    def save_run(self, run_dir: Path) -> None:
        self.codes.save(run_dir / CODES_DIR)

    @torch.no_grad()
    def recommend(
        self, model: torch.nn.Module, cfg: NextItemConfig, user: str, k: int, options: dict
    ) -> Recommendation:
        """The top-`k` next items for one user (raw id) from all of their history, by beam search."""
        return self.recommend_many(model, cfg, [user], k, options)[0]

    def recommend_many(
        self, model: torch.nn.Module, cfg: NextItemConfig, users: Sequence[str], k: int, options: dict
    ) -> list[Recommendation]:
        """The top-`k` next items of each user, the users' beams searched together (with `eval.seen:
        remove`, never an item the user already has)."""
        user_idx = np.array([self.data.user_index(user) for user in users], dtype=np.int64)
        lengths = self.data.users["seq_len"].to_numpy()[user_idx].astype(np.int64)
        for user, length in zip(users, lengths, strict=True):
            if length == 0:
                raise LifeloraError(f"user {user!r} has no interactions in {self.data.name}")
        samples = NextItemSamples("recommend", user_idx, lengths, np.full(len(users), -1))
        examples = self.examples_of(cfg, samples, self.lens(cfg))
        items, scores = beam_search(
            model,
            examples.prompts(list(range(len(users)))),
            self.decoding(cfg),
            beams=max(k, cfg.eval.beams),
            routing=examples.routing,
            token_routing=examples.token_routing,
            exclude=self.seen_items(samples) if cfg.eval.seen == "remove" else None,
        )
        ids = self.data.items["item"].to_numpy()
        found = []
        for row, user in enumerate(users):
            keep = items[row] >= 0
            top = items[row][keep][:k].numpy()
            table = pl.DataFrame(
                {
                    "rank": np.arange(1, len(top) + 1),
                    "item": ids[top],
                    "title": self.titles(top),
                    "log_prob": scores[row][keep][:k].numpy(),
                }
            )
            title = f"next {k} items for user {user} ({self.data.name}, beam search over item codes)"
            found.append(Recommendation(table, title, "log_prob", "{:.3f}"))
        return found

    # --- periods ----------------------------------------------------------------------------------------

    def period_samples(self, periods: np.ndarray, period: int, split: str) -> NextItemSamples:
        """PESO's protocol: per user, the period's last interaction tests, the second-last validates."""
        return block_leave_one_out(self.data, periods, period, split)

    def period_lenses(
        self, periods: np.ndarray, mode: str, named: SASRecLens, directory: Path, log
    ) -> PeriodLenses:
        return SequenceLenses(self.data, periods, mode, named, directory, log)

    def users_and_rows(self, samples: NextItemSamples) -> tuple[np.ndarray, np.ndarray]:
        offset = self.data.users["seq_offset"].to_numpy().astype(np.int64)
        return samples.user_idx, offset[samples.user_idx] + samples.position

    @staticmethod
    def take(samples: NextItemSamples, rows: np.ndarray) -> NextItemSamples:
        return samples.subset(rows)

    @staticmethod
    def concat(parts: Sequence[NextItemSamples]) -> NextItemSamples:
        return NextItemSamples.concat(list(parts))
