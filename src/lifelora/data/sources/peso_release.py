"""PESO's released continual blocks (github.com/hsyoo32/peso, `data/<name>/`) and given item codes.

A release directory holds `<name>.all.block_<k>.json` for k = 0 … K-1, each `{user: {"previous_block":
[...], "current_block": [...]}}` with items in chronological order, and `<name>.index.<…>.json`, each
item's code tokens (`{item: ["<a_12>", "<b_3>", …]}`). The blocks become the interactions' given periods
and the index the items' given codes; nothing is re-cut or re-quantized.

The release has no timestamps and no ratings: an interaction's timestamp is block × 10⁶ + its position
in the user's whole sequence (an order, not a time), its rating 1.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from lifelora.data.raw import RawDataset, catalogue_from_keys
from lifelora.errors import LifeloraError

BLOCK_FILE = re.compile(r"^(?P<name>.+)\.all\.block_(?P<block>\d+)\.json$")
BLOCK_SECONDS = 1_000_000  # spacing of the blocks' pseudo-timestamps
_TRAILING_DIGITS = re.compile(r"(\d+)\D*$")


def is_release(source: Path) -> bool:
    """A directory with `*.all.block_0.json`: PESO's release layout."""
    try:
        return source.is_dir() and any(source.glob("*.all.block_0.json"))
    except OSError:
        return False


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise LifeloraError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise LifeloraError(f"{path}: not valid JSON ({exc})") from None


def block_files(directory: Path) -> list[Path]:
    """The block files in block order; their numbers must run 0, 1, …, K-1 under one name."""
    found: dict[int, Path] = {}
    names = set()
    for path in directory.glob("*.all.block_*.json"):
        match = BLOCK_FILE.match(path.name)
        if match:
            found[int(match["block"])] = path
            names.add(match["name"])
    if len(names) > 1:
        raise LifeloraError(f"{directory}: block files of more than one dataset ({', '.join(sorted(names))})")
    numbers = sorted(found)
    expected = list(range(len(numbers)))
    if numbers != expected:
        missing = sorted(set(expected) - set(numbers))
        raise LifeloraError(
            f"{directory}: block numbers must run 0, 1, … without a gap; found {numbers} "
            f"(missing block {missing[0] if missing else numbers[-1]})"
        )
    return [found[k] for k in numbers]


def _sequences(blocks: list[Path]) -> pl.DataFrame:
    """(user, item, period, position) of every interaction; each user's `previous_block` in a block must
    be exactly their items of the blocks before it."""
    so_far: dict[str, list[str]] = {}
    users, items, periods, positions = [], [], [], []
    for period, path in enumerate(blocks):
        content = _read_json(path)
        if not isinstance(content, dict):
            raise LifeloraError(f"{path}: expected an object {{user: {{previous_block, current_block}}}}")
        for user, entry in content.items():
            if not isinstance(entry, dict) or not {"previous_block", "current_block"} <= set(entry):
                raise LifeloraError(f"{path}: user {user!r} has no previous_block and current_block lists")
            previous = [str(i) for i in entry["previous_block"]]
            current = [str(i) for i in entry["current_block"]]
            earlier = so_far.get(user, [])
            if previous != earlier:
                raise LifeloraError(
                    f"{path}: user {user!r}'s previous_block ({len(previous)} items) is not their "
                    f"{len(earlier)} items of the earlier blocks"
                )
            start = len(earlier)
            users += [user] * len(current)
            items += current
            periods += [period] * len(current)
            positions += range(start, start + len(current))
            so_far[user] = earlier + current
    return pl.DataFrame(
        {"user": users, "item": items, "period": periods, "position": positions},
        schema={"user": pl.Utf8, "item": pl.Utf8, "period": pl.Int32, "position": pl.Int64},
    )


def code_value(token: object) -> int | None:
    """An integer code, or a token's trailing digits (`<a_128>` → 128); None when neither."""
    if isinstance(token, int) and not isinstance(token, bool):
        return token if token >= 0 else None
    if isinstance(token, str) and (match := _TRAILING_DIGITS.search(token)):
        return int(match[1])
    return None


def read_codes(path: Path, items: pl.Series) -> pl.DataFrame:
    """Given item codes, `{item: [code, …]}` (integers or tokens ending in digits), for `items`: one row
    per item (item, codes: list of int), every item coded, every code the same length."""
    content = _read_json(path)
    if not isinstance(content, dict) or not content:
        raise LifeloraError(f"{path}: expected a non-empty object {{item: [code, …]}}")
    length = None
    rows: dict[str, list[int]] = {}
    for item, tokens in content.items():
        if not isinstance(tokens, list) or not tokens:
            raise LifeloraError(f"{path}: item {item!r}: its codes must be a non-empty list")
        if length is None:
            length = len(tokens)
        elif len(tokens) != length:
            raise LifeloraError(
                f"{path}: item {item!r} has {len(tokens)} codes, others {length}: codes of mixed length"
            )
        values = [code_value(t) for t in tokens]
        if None in values:
            bad = tokens[values.index(None)]
            raise LifeloraError(
                f"{path}: item {item!r}: code {bad!r} is neither a non-negative integer nor a token "
                "ending in digits"
            )
        rows[str(item)] = values
    missing = [i for i in items.to_list() if i not in rows]
    if missing:
        raise LifeloraError(f"{path}: {len(missing)} item(s) have no codes, e.g. {missing[0]!r}")
    return pl.DataFrame(
        {"item": items, "codes": [rows[i] for i in items.to_list()]},
        schema={"item": pl.Utf8, "codes": pl.List(pl.Int64)},
    )


def index_file(directory: Path) -> Path:
    found = sorted(directory.glob("*.index.*.json"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise LifeloraError(f"{directory}: {what} item index files (*.index.*.json); expected one")
    return found[0]


def load_release(directory: Path, name: str) -> RawDataset:
    """The interactions (with their block as `period`) and the index's codes of every item."""
    blocks = block_files(directory)
    frame = _sequences(blocks)
    if frame.height == 0:
        raise LifeloraError(f"{directory}: the blocks hold no interactions")
    interactions = frame.select(
        "user",
        "item",
        rating=pl.lit(1.0, dtype=pl.Float64),
        timestamp=pl.col("period").cast(pl.Int64) * BLOCK_SECONDS + pl.col("position"),
        period="period",
    )
    items = catalogue_from_keys(interactions["item"], "item").with_columns(
        title=pl.col("item"), year=pl.lit(None, dtype=pl.Int32), genres=pl.lit([], dtype=pl.List(pl.Utf8))
    )
    users = catalogue_from_keys(interactions["user"], "user")
    raw = RawDataset(name, interactions, items, users, source=str(blocks[0])).validate()
    raw.codes = read_codes(index_file(directory), items["item"])
    return raw
