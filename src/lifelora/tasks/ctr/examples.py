"""CTR examples for the LLM: sample rows with their retrieved history positions; prompts are built and
tokenized lazily, a batch at a time, in `collate` (histories stay stored once per user)."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from lifelora.data.prepared import PreparedData
from lifelora.llm.batching import left_pad, positions_of
from lifelora.tasks.ctr.prompts import PromptBuilder


class CTRExamples(torch.utils.data.Dataset):
    """Indexable rows; `collate` turns a list of row numbers into a left-padded token batch.

    `routing` ([n, d_h], the lens's hidden vectors) goes with each batch for a personalized adapter."""

    def __init__(
        self,
        data: PreparedData,
        builder: PromptBuilder,
        samples: pl.DataFrame,
        positions: np.ndarray,
        routing: torch.Tensor | None = None,
    ):
        self.routing = routing
        history = data.indexed_history(samples, positions)
        self.samples = samples
        self.builder = builder
        self.users = samples["user_idx"].to_numpy()
        self.targets = samples["item_idx"].to_numpy()
        self.labels = samples["label"].to_numpy().astype(np.int64)
        self.hist_items = [row[m] for row, m in zip(history.items, history.mask, strict=True)]
        self.hist_ratings = [row[m] for row, m in zip(history.ratings, history.mask, strict=True)]

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, row: int) -> int:
        return row

    def prompts(self, rows) -> list[list[int]]:
        return self.builder.encode(
            self.users[rows],
            self.targets[rows],
            [self.hist_items[r] for r in rows],
            [self.hist_ratings[r] for r in rows],
        )

    def collate(self, rows: list[int]) -> dict:
        rows = np.asarray(rows)
        ids, mask = left_pad(self.prompts(rows), self.builder.tokenizer.pad_token_id)
        answers = torch.as_tensor(self.builder.answer_ids)[torch.from_numpy(self.labels[rows])]
        routing = {} if self.routing is None else {"routing": self.routing[torch.from_numpy(rows)]}
        return {
            **routing,
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions_of(mask),
            "labels": answers,
            "rows": torch.from_numpy(rows),
        }
