"""Encoding prepared samples into the lens's categorical fields.

Vocabularies come from what was known by the end of the training period (or by a chosen time, for
continual learning); code 0 of every field is "unknown" and its embedding stays zero, which defines
the lens's cold-start input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from lifelora.data.prepared import History, PreparedData

ITEM_FIELDS = ("item", "genre", "decade")


@dataclass
class LensBatch:
    """Everything the lens reads for a batch of samples (codes are field-local, 0 = unknown)."""

    user_fields: torch.Tensor  # long [B, Fu]
    item_fields: torch.Tensor  # long [B, Fi]
    history_items: torch.Tensor  # long [B, K, Fi] item field codes (all 0 where masked)
    history_ratings: torch.Tensor  # long [B, K]
    history_mask: torch.Tensor  # bool [B, K]


def _codes(values: pl.Series, vocabulary: list[str]) -> np.ndarray:
    lookup = pl.DataFrame({"value": vocabulary, "code": np.arange(1, len(vocabulary) + 1, dtype=np.int64)})
    joined = (
        values.cast(pl.Utf8).to_frame("value").join(lookup, on="value", how="left", maintain_order="left")
    )
    return joined["code"].fill_null(0).to_numpy()


def _item_field_values(items: pl.DataFrame) -> dict[str, pl.Series]:
    return {
        "item": items["item"],
        "genre": items["genres"].list.first(),
        "decade": (items["year"] // 10 * 10).cast(pl.Utf8),
    }


class FieldEncoder:
    """Vocabularies for user and item fields and the rating values, saved with the lens."""

    def __init__(self, vocabularies: dict[str, list[str]], user_fields: list[str], ratings: list[float]):
        self.vocabularies = vocabularies
        self.user_fields = user_fields
        self.ratings = ratings

    @classmethod
    def fit(cls, data: PreparedData, until: int | None = None) -> FieldEncoder:
        """Values known at a point in time; everything later gets code 0 (unknown).

        `until=None`: the end of the training split, users being those of the train samples and items
        those in any interaction by then. A timestamp (a continual-learning period's end): users and
        items with an interaction at or before it. Rating values always come from the whole data.
        """
        if until is None:
            train = data.split("train")
            cutoff = int(train["timestamp"].max())
            seen_users = train["user_idx"].unique()
        else:
            cutoff = int(until)
            seen_users = pl.Series(data.users_seen_until(cutoff))
        seen_items = pl.Series(data.items_seen_until(cutoff))
        users = data.users.filter(pl.col("user_idx").is_in(seen_users.implode()))
        items = data.items.filter(pl.col("item_idx").is_in(seen_items.implode()))
        user_fields = ["user", *data.meta["stats"]["user_features"]]
        vocab = {
            f"user.{f}": sorted(users[f].cast(pl.Utf8).drop_nulls().unique().to_list()) for f in user_fields
        }
        for field, values in _item_field_values(items).items():
            vocab[f"item.{field}"] = sorted(values.drop_nulls().unique().to_list())
        ratings = sorted(float(r) for r in data.sequences["rating"].unique().to_list())
        return cls(vocab, user_fields, ratings)

    def to_dict(self) -> dict:
        return {"vocabularies": self.vocabularies, "user_fields": self.user_fields, "ratings": self.ratings}

    @classmethod
    def from_dict(cls, state: dict) -> FieldEncoder:
        return cls(state["vocabularies"], state["user_fields"], state["ratings"])

    def field_sizes(self) -> dict[str, int]:
        sizes = {name: len(values) + 1 for name, values in self.vocabularies.items()}
        sizes["rating"] = len(self.ratings) + 1
        return sizes

    def user_table(self, data: PreparedData) -> np.ndarray:
        """[n_users, Fu] codes, indexed by user_idx."""
        return np.stack(
            [_codes(data.users[f], self.vocabularies[f"user.{f}"]) for f in self.user_fields], axis=1
        )

    def item_table(self, data: PreparedData) -> np.ndarray:
        """[n_items, Fi] codes, indexed by item_idx."""
        values = _item_field_values(data.items)
        return np.stack([_codes(values[f], self.vocabularies[f"item.{f}"]) for f in ITEM_FIELDS], axis=1)

    def rating_codes(self, ratings: np.ndarray) -> np.ndarray:
        known = np.asarray(self.ratings, dtype=np.float32)
        position = np.searchsorted(known, ratings)
        clipped = np.minimum(position, len(known) - 1)
        return np.where(known[clipped] == ratings, clipped + 1, 0)


class EncodedSplit:
    """One split held as compact arrays; `batch(idx)` builds the tensors for those rows."""

    def __init__(
        self,
        samples: pl.DataFrame,
        history: History,
        encoder: FieldEncoder,
        users: np.ndarray,
        items: np.ndarray,
    ):
        self.samples = samples
        self.labels = samples["label"].to_numpy().astype(np.float32)
        self.user_idx = samples["user_idx"].to_numpy()
        self._user_codes = users[self.user_idx]
        self._target = torch.from_numpy(items[samples["item_idx"].to_numpy()])
        # history as rows of a padded item table (row 0 = all unknown): 4 bytes per position
        self._item_rows = torch.from_numpy(np.vstack([np.zeros_like(items[:1]), items]))
        self._history_rows = torch.from_numpy(np.where(history.mask, history.items + 1, 0).astype(np.int32))
        codes = np.where(history.mask, encoder.rating_codes(history.ratings), 0)
        self._history_ratings = torch.from_numpy(codes.astype(np.int64))
        self._history_mask = torch.from_numpy(history.mask)
        self._users = torch.from_numpy(self._user_codes)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor) -> LensBatch:
        return LensBatch(
            user_fields=self._users[idx],
            item_fields=self._target[idx],
            history_items=self._item_rows[self._history_rows[idx].long()],
            history_ratings=self._history_ratings[idx],
            history_mask=self._history_mask[idx],
        )
