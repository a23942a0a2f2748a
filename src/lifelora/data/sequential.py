"""Next-item samples from the per-user sequences: every interaction whose user has an earlier one is a
target, its history the items before it.

Leave-one-out (PESO, SASRec): per user, the last interaction is the test target, the second-last the
validation target, every earlier one (but the first, which has no history) a training target. Histories
always reach back to the start of the user's sequence; a model truncates them to its own window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lifelora.data.prepared import History, PreparedData
from lifelora.errors import LifeloraError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class NextItemSamples:
    """Targets of one split: user, the target's position in the user's sequence, and the target item."""

    split: str
    user_idx: np.ndarray  # int64 [n]
    position: np.ndarray  # int64 [n]; the history is the user's positions 0 … position-1
    target: np.ndarray  # int64 [n] item_idx

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, rows: np.ndarray) -> NextItemSamples:
        return NextItemSamples(self.split, self.user_idx[rows], self.position[rows], self.target[rows])


def _offsets(data: PreparedData) -> tuple[np.ndarray, np.ndarray]:
    return data.users["seq_offset"].to_numpy().astype(np.int64), data.users["seq_len"].to_numpy().astype(
        np.int64
    )


def leave_one_out(data: PreparedData, split: str) -> NextItemSamples:
    """The split's targets in user order (within a user, in time order).

    A user with n interactions gives n-3 training targets, one validation and one test target; a user
    with 2 gives only a test target, a user with 1 nothing."""
    if split not in SPLITS:
        raise LifeloraError(f"unknown next-item split {split!r}; choose one of {', '.join(SPLITS)}")
    offset, length = _offsets(data)
    users = np.arange(len(length))
    if split == "test":
        keep = length >= 2
        user_idx, position = users[keep], length[keep] - 1
    elif split == "valid":
        keep = length >= 3
        user_idx, position = users[keep], length[keep] - 2
    else:
        per_user = np.maximum(length - 3, 0)
        user_idx = np.repeat(users, per_user)
        starts = np.cumsum(per_user) - per_user
        position = np.arange(per_user.sum()) - np.repeat(starts, per_user) + 1
    items = data.sequences["item_idx"].to_numpy()
    target = items[offset[user_idx] + position].astype(np.int64)
    return NextItemSamples(split, user_idx.astype(np.int64), position.astype(np.int64), target)


def history_window(data: PreparedData, samples: NextItemSamples, length: int) -> History:
    """The `length` items before each target (left-padded; `mask` marks real entries), in time order."""
    if length < 1:
        raise LifeloraError(f"history length must be at least 1, got {length}")
    offset, _ = _offsets(data)
    columns = np.arange(length)
    n_valid = np.minimum(samples.position, length)
    mask = columns[None, :] >= (length - n_valid)[:, None]
    positions = offset[samples.user_idx][:, None] + samples.position[:, None] - length + columns[None, :]
    positions = np.where(mask, positions, 0)
    items = data.sequences["item_idx"].to_numpy()[positions]
    ratings = data.sequences["rating"].to_numpy()[positions]
    return History(
        np.where(mask, items, 0).astype(np.int32), np.where(mask, ratings, 0).astype(np.float32), mask
    )


def seen_before(data: PreparedData, samples: NextItemSamples) -> tuple[np.ndarray, np.ndarray]:
    """(row, item_idx) pairs of every item each sample's user interacted with before its target: what
    a ranking with seen items removed masks out."""
    offset, _ = _offsets(data)
    rows = np.repeat(np.arange(len(samples)), samples.position)
    starts = np.cumsum(samples.position) - samples.position
    within = np.arange(samples.position.sum()) - np.repeat(starts, samples.position)
    items = data.sequences["item_idx"].to_numpy()[offset[samples.user_idx][rows] + within]
    return rows, items.astype(np.int64)
