"""The `sequence` layout of next-item training: one example per window of a user's items, a short header
followed by the items' code tokens in order, with a loss on every supervised item's code tokens.

A prompt per target (`prompt`, PESO's layout) spends ~116 tokens at history 10 to supervise 4 code tokens;
a window of W items supervises up to W - H targets with W·L tokens, each target still seeing at least as
much history as the prompt layout shows it (H items, or all before it). Which positions carry a loss is
given by the samples (a split's or a period's targets), never by the position alone. Inference asks the
same text: the header, the last H items, then the next item's code decoded over the code tokens only
(`CodeDecoding(normalise="codes")`), normalised as the loss here is.

A routed (personalized) adapter is routed per token: each token carries the lens state before the item it
helps predict (the header's last token and an item's first L-1 code tokens predict that item's codes; its
last code token predicts the next item), so a window trains the bank as the prompt layout would target by
target, each target routed by the state before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import NextItemSamples
from lifelora.errors import LifeloraError
from lifelora.llm.batching import left_pad, positions_of
from lifelora.llm.chat import chat_wrapper, leading_bos
from lifelora.llm.logits import final_hidden, row_logits, training_inputs
from lifelora.tasks.next_item.code_scores import CodeDecoding

HEADER = "The user has interacted with the following items in chronological order:"
IGNORE = -100  # label of a position without a loss

Route = Callable[[NextItemSamples], torch.Tensor]  # lens state [n, d] before each sample's position


class SequenceBuilder:
    """Token ids of the sequence layout: BOS where the model wants one, the header inside the model's chat
    template (the assistant's turn opens), then each item's code tokens with nothing between them (every
    level has its own tokens, so an item's boundary is never ambiguous)."""

    def __init__(self, tokenizer, code_ids: np.ndarray):
        head, tail = chat_wrapper(tokenizer)
        text = tokenizer(head + HEADER + tail, add_special_tokens=False)["input_ids"]
        self.tokenizer = tokenizer
        self.header = leading_bos(tokenizer, head) + text
        self.code_ids = code_ids  # [n_items, L]

    @property
    def code_length(self) -> int:
        return self.code_ids.shape[1]

    def encode(self, histories: list[np.ndarray]) -> list[list[int]]:
        return [self.header + self.code_ids[h].reshape(-1).tolist() for h in histories]

    def token_items(self, n_items: int) -> np.ndarray:
        """Per token of header + `n_items` items: the routing vector it takes, as an index into the lens
        states before items 0 … n_items of the text (n_items: the state before the item to predict)."""
        length = self.code_length
        items = np.arange(n_items)[:, None]
        per_item = np.concatenate([np.repeat(items, length - 1, 1), items + 1], 1).reshape(-1)
        return np.concatenate([np.zeros(len(self.header), dtype=np.int64), per_item])


def token_routing(
    route: Route, builder: SequenceBuilder, users: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> list[torch.Tensor]:
    """Per text of a user's items `start … end-1` after the header: its per-token routing [tokens, d],
    from one lens call over the states before positions start … end of every text."""
    counts = ends - starts + 1
    firsts = np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.repeat(starts, counts) + np.arange(counts.sum()) - firsts
    states = route(NextItemSamples("train", np.repeat(users, counts), positions, np.full(counts.sum(), -1)))
    offsets = np.cumsum(counts) - counts
    return [
        states[torch.from_numpy(offset + builder.token_items(int(count) - 1))]
        for offset, count in zip(offsets, counts, strict=True)
    ]


@dataclass(frozen=True)
class Windows:
    """Training windows: per window its user and its items `start … end-1` (positions in the user's
    sequence); `targets` the supervised positions, grouped by window (`window_of`)."""

    user_idx: np.ndarray
    start: np.ndarray
    end: np.ndarray
    targets: NextItemSamples
    window_of: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def subset(self, rows: np.ndarray) -> Windows:
        """The windows `rows` (in their order), with their targets."""
        keep = np.isin(self.window_of, rows)
        renumber = np.full(len(self), -1)
        renumber[rows] = np.arange(len(rows))
        return Windows(
            self.user_idx[rows],
            self.start[rows],
            self.end[rows],
            self.targets.subset(np.flatnonzero(keep)),
            renumber[self.window_of[keep]],
        )


def plan_windows(samples: NextItemSamples, history: int, window: int) -> Windows:
    """The fewest windows of at most `window` items that supervise every target of `samples` once, each
    with at least min(position, `history`) items before it inside its window.

    Per user, in time order: a window starts `history` items before its first unsupervised target (or at
    the sequence's start) and takes every target before start + `window`; it ends after the last of them.
    A window is fixed by its first target, so planning a subset of windows' targets gives those windows."""
    if window <= history:
        raise LifeloraError(f"prompt.window ({window}) must be longer than prompt.history ({history})")
    order = np.lexsort((samples.position, samples.user_idx))
    key = samples.user_idx[order] * (int(samples.position.max(initial=0)) + 1) + samples.position[order]
    targets = samples.subset(order[np.r_[True, key[1:] != key[:-1]]] if len(order) else order)
    users, positions = targets.user_idx, targets.position
    user_ends = np.searchsorted(users, users, side="right")
    starts, ends, firsts = [], [], []
    window_of = np.empty(len(targets), dtype=np.int64)
    row = 0
    while row < len(targets):
        start = max(0, int(positions[row]) - history)
        last = row + int(np.searchsorted(positions[row : user_ends[row]], start + window))
        window_of[row:last] = len(starts)
        starts.append(start)
        ends.append(int(positions[last - 1]) + 1)
        firsts.append(row)
        row = last
    return Windows(
        users[firsts].astype(np.int64),
        np.asarray(starts, dtype=np.int64),
        np.asarray(ends, dtype=np.int64),
        targets,
        window_of,
    )


class WindowExamples(torch.utils.data.Dataset):
    """Indexable windows; `collate` gives left-padded windows, `labels` the code token each position
    predicts (`IGNORE` where none), and with a lens each token's routing vector [B, T, d]."""

    def __init__(
        self, data: PreparedData, windows: Windows, builder: SequenceBuilder, route: Route | None = None
    ):
        if len(windows) == 0:
            raise LifeloraError(f"{data.name}: no next-item targets to train on")
        self.windows, self.builder = windows, builder
        self.offset = data.users["seq_offset"].to_numpy().astype(np.int64)
        self.items = data.sequences["item_idx"].to_numpy()
        bounds = np.searchsorted(windows.window_of, np.arange(len(windows) + 1))
        self.target_bounds = bounds
        self.routing = (
            None
            if route is None
            else token_routing(route, builder, windows.user_idx, windows.start, windows.end)
        )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, row: int) -> int:
        return row

    @property
    def n_targets(self) -> int:
        return len(self.windows.targets)

    def window_items(self, row: int) -> np.ndarray:
        w = self.windows
        begin = self.offset[w.user_idx[row]]
        return self.items[begin + w.start[row] : begin + w.end[row]]

    def labels_of(self, row: int, length: int) -> np.ndarray:
        """[length] the code token each position of window `row`'s text predicts, IGNORE elsewhere."""
        targets = self.windows.targets
        rows = np.arange(self.target_bounds[row], self.target_bounds[row + 1])
        size = self.builder.code_length
        first = len(self.builder.header) + (targets.position[rows] - self.windows.start[row]) * size - 1
        labels = np.full(length, IGNORE, dtype=np.int64)
        labels[(first[:, None] + np.arange(size)).reshape(-1)] = self.builder.code_ids[
            targets.target[rows]
        ].reshape(-1)
        return labels

    def collate(self, rows: list[int]) -> dict:
        texts = self.builder.encode([self.window_items(r) for r in rows])
        ids, mask = left_pad(texts, self.builder.tokenizer.pad_token_id)
        width = ids.shape[1]
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, (row, text) in enumerate(zip(rows, texts, strict=True)):
            labels[i, width - len(text) :] = torch.from_numpy(self.labels_of(row, len(text)))
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions_of(mask),
            "labels": labels,
            "rows": torch.as_tensor(rows),
        }
        if self.routing is not None:
            batch["routing"] = torch.stack(
                [F.pad(self.routing[r], (0, 0, width - len(self.routing[r]), 0)) for r in rows]
            )
        return batch


def supervised_log_probs(model: torch.nn.Module, batch: dict, decoding: CodeDecoding) -> torch.Tensor:
    """[supervised tokens] log-probability of every supervised code token (row-major over the batch),
    from the final hidden state at the position before it projected in fp32 onto the code rows only,
    normalised over its own level's codes, or those the trie allows after the item's earlier tokens
    (`prompt.normalise`), / T: exactly how `decoding` scores a code's tokens.

    `labels` is [B, T] (a window's: the token each position predicts) or [B, L] (a prompt + response
    batch, as validation collates it: the response is the last L tokens)."""
    hidden = final_hidden(model, **training_inputs(batch))
    labels = batch["labels"]
    width = batch["input_ids"].shape[1]
    if labels.shape[1] != width:  # one prompt per target: its response, the last L tokens
        response = labels
        labels = torch.full_like(batch["input_ids"], IGNORE)
        labels[:, width - response.shape[1] - 1 : width - 1] = response
    supervised = labels != IGNORE
    device = labels.device
    rows = torch.as_tensor(decoding.rows, device=device)
    logits = row_logits(model, hidden[supervised], rows) / decoding.temperature
    column = decoding.row_of.to(device)[labels[supervised]]
    logits = logits.masked_fill(~decoding.allowed_columns(column), -torch.inf)
    return torch.log_softmax(logits, dim=-1).gather(1, column[:, None]).squeeze(1)


def sequence_loss(model: torch.nn.Module, batch: dict, decoding: CodeDecoding) -> torch.Tensor:
    """Mean cross-entropy of every supervised code token of the batch (`supervised_log_probs`)."""
    return -supervised_log_probs(model, batch, decoding).mean()
