"""Raw interactions → labelled, chronologically split samples with per-user histories (ReLLa's pipeline)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lifelora import __version__
from lifelora.data.raw import RawDataset, without_duplicates
from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, write_json, write_parquet

SPLITS = ("train", "valid", "test")


class Preset(BaseModel):
    """How samples are made from interactions; `rella` reproduces ReLLa/RecLoRA's ML-1M preparation."""

    model_config = ConfigDict(extra="forbid")

    name: str = "rella"
    label_threshold: float = Field(3.0, description="label = rating > threshold")
    min_history: int = Field(5, ge=0, description="drop samples with fewer earlier interactions")
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    drop_duplicates: bool = False

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError("split fractions must be non-negative and sum to 1")
        return value


PRESETS = {"rella": Preset()}


def preset_by_name(name: str) -> Preset:
    if name not in PRESETS:
        raise LifeloraError(f"--preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _index_of(keys: pl.Series, catalogue: pl.DataFrame, key: str) -> np.ndarray:
    lookup = catalogue.select(key).with_row_index("idx")
    return keys.to_frame(key).join(lookup, on=key, how="left", maintain_order="left")["idx"].to_numpy()


def prepare(raw: RawDataset, preset: Preset) -> dict[str, pl.DataFrame | dict]:
    """Label, sort by (timestamp, user, item) in catalogue order, cut histories and split by global time."""
    interactions = without_duplicates(raw.interactions, raw.source, preset.drop_duplicates)
    user_idx = _index_of(interactions["user"], raw.users, "user").astype(np.int32)
    item_idx = _index_of(interactions["item"], raw.items, "item").astype(np.int32)
    timestamp = interactions["timestamp"].to_numpy()
    rating = interactions["rating"].to_numpy().astype(np.float32)

    order = np.lexsort((item_idx, user_idx, timestamp))
    user_idx, item_idx, timestamp, rating = user_idx[order], item_idx[order], timestamp[order], rating[order]

    by_user = np.argsort(user_idx, kind="stable")
    seq_len = np.bincount(user_idx, minlength=raw.users.height)
    seq_offset = np.concatenate([[0], np.cumsum(seq_len)[:-1]])
    position = np.empty_like(user_idx)
    position[by_user] = np.arange(len(by_user)) - seq_offset[user_idx[by_user]]

    keep = position >= preset.min_history
    n = int(keep.sum())
    if n == 0:
        raise LifeloraError(
            f"{raw.source}: no samples left: no user has more than {preset.min_history} interactions "
            f"(every user's first {preset.min_history} only form history)"
        )
    n_train, n_valid = int(preset.split[0] * n), int(preset.split[1] * n)
    split = np.full(n, 2, dtype=np.int8)
    split[:n_train], split[n_train : n_train + n_valid] = 0, 1
    samples = pl.DataFrame(
        {
            "sample_id": np.arange(n, dtype=np.int64),
            "user_idx": user_idx[keep],
            "item_idx": item_idx[keep],
            "rating": rating[keep],
            "timestamp": timestamp[keep],
            "label": (rating[keep] > preset.label_threshold).astype(np.int8),
            "hist_len": position[keep].astype(np.int32),
            "split": pl.Series(np.array(SPLITS)[split], dtype=pl.Enum(SPLITS)),
        }
    )
    sequences = pl.DataFrame(
        {"item_idx": item_idx[by_user], "rating": rating[by_user], "timestamp": timestamp[by_user]}
    )
    users = raw.users.with_row_index("user_idx").with_columns(
        seq_offset=pl.Series(seq_offset, dtype=pl.Int64), seq_len=pl.Series(seq_len, dtype=pl.Int32)
    )
    items = raw.items.with_row_index("item_idx")
    extra: dict = {}
    if "period" in interactions.columns:
        periods = given_periods(interactions["period"], order[by_user], user_idx[by_user], raw)
        sequences = sequences.with_columns(period=pl.Series(periods, dtype=pl.Int32))
        extra["periods"] = int(periods.max()) + 1
    meta = {
        "dataset": raw.name,
        "source": raw.source,
        "preset": preset.model_dump(mode="json"),
        "lifelora_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stats": statistics(samples, sequences, users, items),
        "fingerprint": fingerprint(samples),
        **extra,
    }
    prepared = {"samples": samples, "sequences": sequences, "users": users, "items": items, "meta": meta}
    if raw.codes is not None:
        prepared["item_codes"] = (
            items.select("item_idx", "item")
            .join(raw.codes, on="item", how="left", maintain_order="left")
            .select("item_idx", "codes")
        )
        prepared["meta"]["codes"] = {"levels": len(raw.codes["codes"][0])}
    return prepared


def given_periods(period: pl.Series, order: np.ndarray, users: np.ndarray, raw: RawDataset) -> np.ndarray:
    """The interactions' given periods in sequence order (`order`: the rows of `raw.interactions` in that
    order, `users` their user_idx): numbered 0 … K-1, none empty, never going back in a user's time."""
    values = period.cast(pl.Int64, strict=False)
    if values.null_count() or (values < 0).any():
        raise LifeloraError(f"{raw.source}: period must be a non-negative integer on every interaction")
    periods = values.to_numpy()[order]
    present = np.unique(periods)
    if not np.array_equal(present, np.arange(len(present))):
        missing = sorted(set(range(int(present.max()) + 1)) - set(present.tolist()))
        raise LifeloraError(
            f"{raw.source}: periods must run 0, 1, … without a gap; period {missing[0]} has no interactions"
        )
    back = np.flatnonzero((users[1:] == users[:-1]) & (periods[1:] < periods[:-1]))
    if len(back):
        row = int(back[0]) + 1
        user = raw.users["user"][int(users[row])]
        raise LifeloraError(
            f"{raw.source}: user {user!r}'s periods go back in time (from {periods[row - 1]} to "
            f"{periods[row]}); a user's interactions must be in non-decreasing period order"
        )
    return periods.astype(np.int32)


def statistics(
    samples: pl.DataFrame, sequences: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame
) -> dict:
    stats = {
        "interactions": sequences.height,
        "samples": samples.height,
        "users": int((users["seq_len"] > 0).sum()),
        "items": sequences["item_idx"].n_unique(),
        "user_features": [c for c in users.columns if c not in ("user_idx", "user", "seq_offset", "seq_len")],
        "positive_rate": round(float(samples["label"].mean()), 4),
    }
    for name in SPLITS:
        part = samples.filter(pl.col("split") == name)
        stats[name] = {
            "samples": part.height,
            "positive_rate": round(float(part["label"].mean()), 4) if part.height else None,
            "users": part["user_idx"].n_unique(),
            "first_timestamp": int(part["timestamp"].min()) if part.height else None,
        }
    return stats


def fingerprint(samples: pl.DataFrame) -> str:
    """A content hash of the samples, equal for the same dataset loaded from any layout."""
    digest = hashlib.sha256()
    for column in ("user_idx", "item_idx", "rating", "timestamp", "label", "hist_len"):
        digest.update(np.ascontiguousarray(samples[column].to_numpy()).tobytes())
    return digest.hexdigest()[:16]


def save_prepared(prepared: dict, directory: Path) -> Path:
    """Write all tables (and given item codes) at once: the directory appears only when complete."""
    with atomic_dir(directory) as tmp:
        for name in ("samples", "sequences", "users", "items", "item_codes"):
            if name in prepared:
                write_parquet(tmp / f"{name}.parquet", prepared[name])
        write_json(tmp / "meta.json", prepared["meta"])
    return directory
