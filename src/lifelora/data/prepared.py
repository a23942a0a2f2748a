"""Reading a prepared dataset back, and cutting per-sample history windows from per-user sequences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lifelora.errors import LifeloraError
from lifelora.io import read_json

TABLES = ("samples", "sequences", "users", "items")


@dataclass
class History:
    """A fixed-width history window per sample, left-padded; `mask` marks real entries."""

    items: np.ndarray  # int32 [n, K], item_idx (0 where padded)
    ratings: np.ndarray  # float32 [n, K]
    mask: np.ndarray  # bool [n, K]


def fingerprints(meta: dict) -> tuple[str, ...]:
    """A prepared dataset's fingerprint and those of the datasets it extends (the same users and items
    with interactions appended, e.g. a served run's feedback): what was made for those fits it too."""
    return (meta["fingerprint"], *meta.get("extends", ()))


@dataclass
class PreparedData:
    """The prepared tables (time periods over them: `lifelora.data.periods`)."""

    directory: Path
    meta: dict
    samples: pl.DataFrame
    sequences: pl.DataFrame
    users: pl.DataFrame
    items: pl.DataFrame

    @classmethod
    def load(cls, directory: str | Path) -> PreparedData:
        directory = Path(directory)
        if not (directory / "meta.json").is_file():
            raise LifeloraError(
                f"{directory}: not a prepared dataset (no meta.json); run `lifelora data prepare`"
            )
        tables = {}
        for name in TABLES:
            path = directory / f"{name}.parquet"
            try:
                tables[name] = pl.read_parquet(path)
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise LifeloraError(f"{path}: unreadable ({exc}); prepare the dataset again") from None
        return cls(directory, read_json(directory / "meta.json"), **tables)

    @property
    def name(self) -> str:
        return self.meta["dataset"]

    @property
    def split_names(self) -> tuple[str, ...]:
        """The split values of the samples: an Enum column's categories (empty ones too), else those present."""
        column = self.samples["split"]
        if isinstance(column.dtype, pl.Enum):
            return tuple(column.dtype.categories.to_list())
        return tuple(column.unique(maintain_order=True).drop_nulls().cast(pl.Utf8).to_list())

    def split(self, name: str) -> pl.DataFrame:
        names = self.split_names
        if name not in names:
            raise LifeloraError(f"unknown split {name!r}; choose one of {', '.join(names)}")
        return self.samples.filter(pl.col("split") == name)

    def split_users(self, name: str) -> pl.DataFrame:
        """The users with samples in split `name` (raw id, sample count), in user order: who can be
        evaluated on, or exported for, that split."""
        counts = self.split(name).group_by("user_idx").agg(pl.len().alias("samples"))
        users = self.users.select("user_idx", "user").join(counts, on="user_idx", how="inner")
        return users.sort("user_idx").select("user", "samples")

    def sequence_users(self) -> np.ndarray:
        """The user_idx of every row of `sequences` (they are grouped per user)."""
        return np.repeat(np.arange(self.users.height), self.users["seq_len"].to_numpy())

    def users_seen_until(self, timestamp: int) -> np.ndarray:
        """Sorted user_idx of the users with an interaction at or before `timestamp`."""
        seen = self.sequences["timestamp"].to_numpy() <= timestamp
        return np.unique(self.sequence_users()[seen])

    def items_seen_until(self, timestamp: int) -> np.ndarray:
        """Sorted item_idx of the items with an interaction at or before `timestamp`."""
        seen = self.sequences["timestamp"].to_numpy() <= timestamp
        return np.unique(self.sequences["item_idx"].to_numpy()[seen])

    def user_index(self, raw_user_id: str) -> int:
        """The user_idx of a user id as in the raw data."""
        matches = self.users.filter(pl.col("user") == raw_user_id)["user_idx"]
        if matches.is_empty():
            raise LifeloraError(f"user {raw_user_id!r} is not in {self.name}")
        return int(matches[0])

    def item_indices(self, raw_item_ids: Sequence[str], option_name: str) -> np.ndarray:
        """The item_idx of raw item ids, each once, in catalogue order; `option_name` heads the error."""
        found = self.items.filter(pl.col("item").is_in(list(raw_item_ids)))
        missing = sorted(set(raw_item_ids) - set(found["item"].to_list()))
        if missing:
            raise LifeloraError(f"{option_name}: {missing[0]!r} is not an item of {self.name}")
        return found["item_idx"].to_numpy()

    def unseen_items(self, user_idx: int) -> np.ndarray:
        """Sorted item_idx of the items the user never interacted with: the candidates to recommend."""
        if not 0 <= user_idx < self.users.height:
            raise LifeloraError(f"user index {user_idx} is out of range ({self.users.height} users)")
        row = self.users.row(user_idx, named=True)
        seen = self.sequences["item_idx"].slice(row["seq_offset"], row["seq_len"]).to_numpy()
        return np.setdiff1d(np.arange(self.items.height), seen)

    def recent_history(self, samples: pl.DataFrame, length: int) -> History:
        """The `length` most recent earlier interactions of each sample's user, in time order."""
        hist_len = samples["hist_len"].to_numpy()
        offset = self.users["seq_offset"].to_numpy()[samples["user_idx"].to_numpy()]
        columns = np.arange(length)
        n_valid = np.minimum(hist_len, length)
        mask = columns[None, :] >= (length - n_valid)[:, None]
        positions = offset[:, None] + hist_len[:, None] - length + columns[None, :]
        return self._gather(np.where(mask, positions, 0), mask)

    def indexed_history(self, samples: pl.DataFrame, positions: np.ndarray) -> History:
        """Histories from precomputed per-sample positions into the user's sequence (-1 = padding).

        This is how a retrieved (SIM) history comes in: any retriever writes positions, in time order.
        """
        if positions.ndim != 2 or positions.shape[0] != samples.height:
            raise LifeloraError(
                f"history index has shape {tuple(positions.shape)}, expected ({samples.height}, K)"
            )
        hist_len = samples["hist_len"].to_numpy()[:, None]
        mask = positions >= 0
        if (positions >= hist_len).any():
            row = int(np.argwhere(positions >= hist_len)[0, 0])
            raise LifeloraError(
                f"history index row {row} points at a position >= its history length {int(hist_len[row, 0])} "
                "(a future interaction)"
            )
        offset = self.users["seq_offset"].to_numpy()[samples["user_idx"].to_numpy()]
        return self._gather(np.where(mask, offset[:, None] + positions, 0), mask)

    def _gather(self, global_positions: np.ndarray, mask: np.ndarray) -> History:
        items = self.sequences["item_idx"].to_numpy()[global_positions]
        ratings = self.sequences["rating"].to_numpy()[global_positions]
        return History(
            np.where(mask, items, 0).astype(np.int32), np.where(mask, ratings, 0).astype(np.float32), mask
        )
