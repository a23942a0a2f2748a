"""Next-item examples for the LLM: PESO's prompt (the user's recent items as code tokens, inside the
model's chat template) and the target's code tokens as the response. Prompts are built and tokenized
lazily, a batch at a time; histories stay stored once per user."""

from __future__ import annotations

import numpy as np
import torch

from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import NextItemSamples, history_window
from lifelora.errors import LifeloraError
from lifelora.llm.batching import left_pad, positions_of
from lifelora.llm.chat import chat_wrapper, leading_bos

# PESO's instruction (arXiv 2510.25093; LC-Rec's sequential-recommendation template)
INSTRUCTION = (
    "The user has interacted with items {items} in chronological order. "
    "Can you predict the next possible item that the user may expect?"
)


class PromptBuilder:
    """Token ids of PESO's prompt for a history of items, from the items' code text."""

    def __init__(self, tokenizer, item_text: list[str]):
        self.tokenizer = tokenizer
        self.item_text = item_text
        self.head, self.tail = chat_wrapper(tokenizer)
        self.bos = leading_bos(tokenizer, self.head)

    def text(self, history: np.ndarray) -> str:
        items = ", ".join(self.item_text[i] for i in history)
        return self.head + INSTRUCTION.format(items=items) + self.tail

    def encode(self, histories: list[np.ndarray]) -> list[list[int]]:
        """Whole-text tokenization (code tokens are atomic), so the ids round-trip through the text."""
        texts = [self.text(h) for h in histories]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [self.bos + ids for ids in encoded]


class NextItemExamples(torch.utils.data.Dataset):
    """Indexable targets; `collate` gives left-padded prompt + response batches whose last `L` columns
    are the target's code tokens (the only positions with a loss).

    `routing` ([n, d_h], the lens's user vectors) goes with each batch for a personalized adapter."""

    def __init__(
        self,
        data: PreparedData,
        samples: NextItemSamples,
        builder: PromptBuilder,
        code_ids: np.ndarray,
        history: int,
        routing: torch.Tensor | None = None,
    ):
        if len(samples) == 0:
            raise LifeloraError(f"{data.name}: the {samples.split} split has no next-item targets")
        window = history_window(data, samples, history)
        self.samples = samples
        self.builder = builder
        self.code_ids = code_ids  # [n_items, L] vocab ids of every item's code
        self.histories = [row[m] for row, m in zip(window.items, window.mask, strict=True)]
        self.routing = routing
        self.token_routing: list[torch.Tensor] | None = None  # per prompt token (the sequence layout)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, row: int) -> int:
        return row

    @property
    def targets(self) -> np.ndarray:
        return self.samples.target

    def prompts(self, rows) -> list[list[int]]:
        return self.builder.encode([self.histories[r] for r in rows])

    def collate(self, rows: list[int]) -> dict:
        rows = np.asarray(rows)
        responses = self.code_ids[self.samples.target[rows]]
        sequences = [p + r.tolist() for p, r in zip(self.prompts(rows), responses, strict=True)]
        ids, mask = left_pad(sequences, self.builder.tokenizer.pad_token_id)
        routing = {} if self.routing is None else {"routing": self.routing[torch.from_numpy(rows)]}
        return {
            **routing,
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions_of(mask),
            "labels": torch.from_numpy(responses.astype(np.int64)),
            "rows": torch.from_numpy(rows),
        }
