"""What every next-item job on one dataset and one backbone shares: the items' semantic-ID codes (made
once from the bare backbone's item vectors), their tokens in the vocabulary, the trie of valid codes,
the prompt builder and the lenses. A run's settings are passed to each call, never stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import NextItemSamples, leave_one_out
from lifelora.lens.sasrec import SASRecLens
from lifelora.llm.backbone import Backbone, load_backbone
from lifelora.llm.vocabulary import add_code_tokens
from lifelora.tasks.next_item.config import NextItemConfig
from lifelora.tasks.next_item.examples import NextItemExamples, PromptBuilder
from lifelora.tasks.next_item.semantic_ids import ItemCodes, SemanticIdConfig, item_codes
from lifelora.tasks.next_item.trie import CodeTrie
from lifelora.tasks.subsets import subset_rows


class NextItemTask:
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
        self.vocabulary = add_code_tokens(
            self.backbone.tokenizer, self.backbone.model, self.codes.level_sizes
        )
        self.trie = CodeTrie(self.codes.codes, self.codes.level_sizes)
        self.code_ids = self.vocabulary.tokens_of(self.codes.codes)
        self.builder = PromptBuilder(
            self.backbone.tokenizer, [self.vocabulary.text_of(code) for code in self.codes.codes]
        )
        self._lenses: dict[Path, SASRecLens] = {}

    @property
    def code_length(self) -> int:
        return self.codes.codes.shape[1]

    def lens(self, cfg: NextItemConfig) -> SASRecLens | None:
        """The frozen SASRec lens that routes the run's personalized adapter (None for other adapters)."""
        if cfg.adapter is None or cfg.adapter.kind != "personalized":
            return None
        path = Path(cfg.lens)
        if path not in self._lenses:
            lens = SASRecLens.load(path)
            lens.check_matches(self.data)
            self._lenses[path] = lens
        return self._lenses[path]

    def samples(self, cfg: NextItemConfig, split: str, n: int | None) -> NextItemSamples:
        """A fixed seeded subset of `n` targets of `split` (one per user for valid and test)."""
        samples = leave_one_out(self.data, split)
        return samples.subset(subset_rows(len(samples), n, cfg.subset.seed))

    def examples(
        self, cfg: NextItemConfig, split: str, n: int | None, lens: SASRecLens | None = None
    ) -> NextItemExamples:
        return self.examples_of(cfg, self.samples(cfg, split, n), lens)

    def examples_of(
        self, cfg: NextItemConfig, samples: NextItemSamples, lens: SASRecLens | None = None
    ) -> NextItemExamples:
        """Prompts for any set of targets (a continual period's, several periods' together)."""
        routing = None if lens is None else lens.user_vectors(self.data, samples)
        return NextItemExamples(
            self.data, samples, self.builder, self.code_ids, cfg.prompt.history, routing=routing
        )

    def titles(self, items: np.ndarray) -> list[str]:
        from lifelora.llm.item_text import item_titles

        return [item_titles(self.data.items[[int(i)]])[0] for i in items]

    def token_rows(self) -> list[int]:
        return list(self.vocabulary.new_token_ids)

    def routing_for(self, lens: SASRecLens, samples: NextItemSamples) -> torch.Tensor:
        return lens.user_vectors(self.data, samples)
