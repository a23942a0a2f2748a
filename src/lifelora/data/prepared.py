"""Reading a prepared dataset back, and cutting per-sample history windows from per-user sequences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lifelora.data.prepare import SPLITS
from lifelora.errors import LifeloraError
from lifelora.io import read_json

TABLES = ("samples", "sequences", "users", "items")


@dataclass
class History:
    """A fixed-width history window per sample, left-padded; `mask` marks real entries."""

    items: np.ndarray  # int32 [n, K], item_idx (0 where padded)
    ratings: np.ndarray  # float32 [n, K]
    mask: np.ndarray  # bool [n, K]


@dataclass
class PreparedData:
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

    def split(self, name: str) -> pl.DataFrame:
        if name not in SPLITS:
            raise LifeloraError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return self.samples.filter(pl.col("split") == name)

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
