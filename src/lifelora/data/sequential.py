"""Next-item samples from the per-user sequences: every interaction whose user has an earlier one is a
target, its history the items before it.

Leave-one-out (PESO, SASRec): per user, the last interaction is the test target, the second-last the
validation target, every earlier one (but the first, which has no history) a training target. Histories
always reach back to the start of the user's sequence; a model truncates them to its own window.

Per block (PESO's continual protocol): the same rule inside each time period, over the user's
interactions in that period; the history still reaches back into earlier periods.
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

    @classmethod
    def concat(cls, parts: list[NextItemSamples], split: str | None = None) -> NextItemSamples:
        """The targets of several sets in order (e.g. the training targets of several periods)."""
        if not parts:
            raise LifeloraError("no next-item samples to concatenate")
        return cls(
            split or parts[0].split,
            np.concatenate([p.user_idx for p in parts]),
            np.concatenate([p.position for p in parts]),
            np.concatenate([p.target for p in parts]),
        )


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


def block_leave_one_out(data: PreparedData, periods: np.ndarray, period: int, split: str) -> NextItemSamples:
    """Leave-one-out inside one period: per user, over the interactions `periods` (one per sequences
    row, `data.periods.interaction_periods`) puts in `period`, the last is the test target, the
    second-last the validation target, the earlier ones training targets. A target needs some history
    (the user's very first interaction is never one), which may come from earlier periods."""
    if split not in SPLITS:
        raise LifeloraError(f"unknown next-item split {split!r}; choose one of {', '.join(SPLITS)}")
    offset, length = _offsets(data)
    users = data.sequence_users().astype(np.int64)
    in_block = np.flatnonzero(periods == period)
    count = np.bincount(users[in_block], minlength=len(length)).astype(np.int64)
    end = np.zeros(len(length), dtype=np.int64)
    np.maximum.at(end, users[in_block], in_block - offset[users[in_block]] + 1)
    if split == "train":
        per_user = np.maximum(count - 2, 0)
        user_idx = np.repeat(np.arange(len(length)), per_user)
        starts = np.cumsum(per_user) - per_user
        position = (end - count)[user_idx] + np.arange(per_user.sum()) - np.repeat(starts, per_user)
    else:
        back = 1 if split == "test" else 2
        user_idx = np.flatnonzero(count >= back)
        position = end[user_idx] - back
    keep = position >= 1
    user_idx, position = user_idx[keep], position[keep]
    target = data.sequences["item_idx"].to_numpy()[offset[user_idx] + position].astype(np.int64)
    return NextItemSamples(split, user_idx.astype(np.int64), position.astype(np.int64), target)


def sequences_until(data: PreparedData, periods: np.ndarray, period: int) -> NextItemSamples:
    """Where each user's training sequence ends once `period` is over: after every interaction of the
    periods up to `period`, but before the validation and test targets `block_leave_one_out` holds out
    of `period` itself. The history of each returned position is that sequence (targets are -1: these
    are sequence ends, not samples). Users with nothing up to `period` are left out."""
    _, length = _offsets(data)
    users = data.sequence_users().astype(np.int64)
    upto = np.bincount(users[periods <= period], minlength=len(length)).astype(np.int64)
    in_block = np.bincount(users[periods == period], minlength=len(length)).astype(np.int64)
    position = upto - np.minimum(in_block, 2)
    user_idx = np.flatnonzero(upto > 0)
    return NextItemSamples("train", user_idx, position[user_idx], np.full(len(user_idx), -1, dtype=np.int64))


def returning(data: PreparedData, periods: np.ndarray, samples: NextItemSamples) -> np.ndarray:
    """Per sample: its user interacted in an earlier period than the target's ("dormant"/returning),
    as opposed to a user new in the target's period."""
    offset, _ = _offsets(data)
    first = periods[offset[samples.user_idx]]
    return first < periods[offset[samples.user_idx] + samples.position]


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
