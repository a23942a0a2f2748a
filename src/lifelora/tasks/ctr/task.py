"""What every click-through job on one dataset and one backbone shares: the data, the backbone, prompt
builders and item vectors, made once and never changed by a run. A run's settings (its `CTRConfig`)
are passed to each call instead, so one `CTRTask` serves any number of runs, in any order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from lifelora.data.history import history_positions
from lifelora.data.prepared import PreparedData
from lifelora.lens import Lens
from lifelora.llm.backbone import Backbone, load_backbone
from lifelora.llm.item_embeddings import item_embeddings
from lifelora.tasks.ctr.config import CTRConfig, PromptSettings
from lifelora.tasks.ctr.examples import CTRExamples
from lifelora.tasks.ctr.prompts import PromptBuilder
from lifelora.tasks.subsets import subset_rows


class CTRTask:
    def __init__(self, data: PreparedData, backbone: Backbone | str, log=print):
        self.data, self.log = data, log
        self.backbone = load_backbone(backbone, log=log) if isinstance(backbone, str) else backbone
        self._builders: dict[str, PromptBuilder] = {}
        self._embeddings: dict[int, np.ndarray] = {}
        self._lenses: dict[Path, Lens] = {}

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
        """Make what the run needs from the bare backbone (item vectors) while it is still bare."""
        self.embeddings(cfg.prompt)

    def lens(self, cfg: CTRConfig) -> Lens | None:
        """The frozen lens that routes the run's personalized adapter (None for other adapters)."""
        if cfg.adapter is None or cfg.adapter.kind != "personalized":
            return None
        path = Path(cfg.lens)
        if path not in self._lenses:
            lens = Lens.load(path)
            lens.check_matches(self.data)
            self._lenses[path] = lens
        return self._lenses[path]

    def examples(self, cfg: CTRConfig, split: str, n: int | None, lens: Lens | None = None) -> CTRExamples:
        """A fixed subset of `n` rows of `split` (seed `cfg.subset.seed`), with routing vectors from
        `lens` when one is given."""
        samples = self.data.split(split)
        rows = subset_rows(samples.height, n, cfg.subset.seed)
        routing = None if lens is None else self.routing(lens, split, rows)
        return self.examples_of(cfg, samples[rows], routing)

    def examples_of(
        self, cfg: CTRConfig, samples: pl.DataFrame, routing: torch.Tensor | None = None
    ) -> CTRExamples:
        """Prompts for any rows of the samples table (a continual period's, several periods' together)."""
        positions = history_positions(
            cfg.prompt.retriever, self.data, samples, cfg.prompt.history, self.embeddings(cfg.prompt)
        )
        return CTRExamples(self.data, self.builder(cfg.prompt.layout), samples, positions, routing)

    def routing(self, lens: Lens, split: str, rows: np.ndarray) -> torch.Tensor:
        """The lens's hidden vectors for these rows of `split`.

        The lens reads its own long history (recent or retrieved 60) over the full data; users it
        never saw get its cold-start vector (their unknown-id embedding is zero)."""
        _, hidden = lens.predict(lens.encode(self.data, split, rows=rows), hidden=True)
        return hidden

    def routing_of(self, lens: Lens, samples: pl.DataFrame) -> torch.Tensor:
        """The lens's hidden vectors for any rows of the samples table (a continual period's rows span
        several splits)."""
        _, hidden = lens.predict(lens.encode_samples(self.data, samples), hidden=True)
        return hidden
