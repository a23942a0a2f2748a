"""The trained DIN/SIM lens: field encoder + DIN, able to score (the baseline row) and emit hidden vectors
(the 256-d routing vector of RecLoRA), saved as safetensors + JSON (`lens.base`). SIM is DIN fed the
retrieved history (`kind: sim`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file

from lifelora.data.prepared import PreparedData
from lifelora.distributed import map_batches
from lifelora.errors import LifeloraError
from lifelora.lens.base import Lens
from lifelora.lens.din.config import LensConfig
from lifelora.lens.din.features import ITEM_FIELDS, EncodedSplit, FieldEncoder
from lifelora.lens.din.network import DIN
from lifelora.precision import autocast


def load_history_index(path: Path, split: str, n_rows: int) -> np.ndarray:
    if not Path(path).is_file():
        raise LifeloraError(
            f"{path}: history index file not found (`lifelora retrieve DATASET --k K` writes it)"
        )
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a bad file
        raise LifeloraError(f"{path}: not a readable safetensors history index ({exc})") from None
    if split not in tensors:
        raise LifeloraError(f"{path}: no history positions for split {split!r} (has {', '.join(tensors)})")
    positions = tensors[split].numpy().astype(np.int64)
    if positions.shape[0] != n_rows:
        raise LifeloraError(f"{path}: split {split!r} has {positions.shape[0]} rows, the dataset {n_rows}")
    return positions


class DINLens(Lens):
    state_file = "lens.json"
    what = "lens"
    config_class = LensConfig

    def __init__(self, config: LensConfig, encoder: FieldEncoder, model: DIN, fingerprint: str):
        super().__init__(config, model, fingerprint)
        self.encoder = encoder

    @classmethod
    def create(
        cls, config: LensConfig, data: PreparedData, until: int | None = None, start: DINLens | None = None
    ) -> DINLens:
        """An untrained lens knowing the users and items seen by `until` (None: the training split's end).

        With `start` (a continual period's lens going on from the last one's), every weight of `start` is
        carried over, each embedding row to its value's place in the grown vocabularies; the values
        `start` never saw (new users, items, genres) keep their fresh rows."""
        encoder = FieldEncoder.fit(data, until)
        model = DIN(config.model, encoder.field_sizes(), encoder.user_fields)
        if start is not None:
            model.load_state_dict(_carried_over(start, encoder, model.state_dict()))
        return cls(config, encoder, model, data.meta["fingerprint"])

    @property
    def hidden_size(self) -> int:
        return self.model.hidden_size

    def encode(
        self, data: PreparedData, split: str, limit: int | None = None, rows: np.ndarray | None = None
    ) -> EncodedSplit:
        """The split (its first `limit` rows, or the rows at positions `rows`) as lens inputs."""
        samples = data.split(split)
        if limit is not None:
            rows = np.arange(min(limit, samples.height))
        return self.encode_samples(data, samples if rows is None else samples[rows])

    def encode_samples(self, data: PreparedData, samples: pl.DataFrame) -> EncodedSplit:
        """Any rows of the samples table as lens inputs (a continual period's rows span several splits)."""
        self.check_matches(data)
        if self.config.kind == "sim":
            history = data.indexed_history(samples, self._retrieved_positions(data, samples))
        else:
            history = data.recent_history(samples, self.config.model.history_length)
        return EncodedSplit(
            samples, history, self.encoder, self.encoder.user_table(data), self.encoder.item_table(data)
        )

    def _retrieved_positions(self, data: PreparedData, samples: pl.DataFrame) -> np.ndarray:
        """SIM's history positions of each sample, read from its own split's rows of the history index."""
        splits = samples["split"].cast(pl.Utf8).to_numpy()
        ids = samples["sample_id"].to_numpy()
        positions: np.ndarray | None = None
        for split in np.unique(splits):
            in_split = data.split(str(split))["sample_id"].to_numpy()
            index = load_history_index(self.config.history_index, str(split), len(in_split))
            if positions is None:
                positions = np.full((samples.height, index.shape[1]), -1, dtype=np.int64)
            mine = np.flatnonzero(splits == split)
            positions[mine] = index[np.searchsorted(in_split, ids[mine])]  # sample ids ascend in a split
        return np.zeros((0, 0), dtype=np.int64) if positions is None else positions

    @torch.no_grad()
    def predict(
        self, encoded: EncodedSplit, batch_size: int = 8192, hidden: bool = False, shard: bool = False
    ):
        """P(click) for every row, and optionally the [n, H] hidden vectors (fp32).

        `shard`: under several processes each scores its share of the batches and all get every row
        back (`lifelora.distributed`); every process must call it then."""
        self.model.eval()
        n = len(encoded)
        batches = [np.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]

        def run(rows: np.ndarray) -> np.ndarray:
            with autocast(self.config.train.precision):
                logits, h = self.model(encoded.batch(torch.from_numpy(rows)))
            columns = [torch.sigmoid(logits.float()).unsqueeze(1)] + ([h.float()] if hidden else [])
            return torch.cat(columns, dim=1).numpy()

        if shard:
            out = map_batches(batches, run, n)
        else:
            out = np.concatenate([run(rows) for rows in batches]) if batches else np.zeros((0, 1), np.float32)
        if n == 0:
            out = np.zeros((0, 1 + (self.hidden_size if hidden else 0)), dtype=np.float32)
        p = np.ascontiguousarray(out[:, 0])
        return (p, torch.from_numpy(np.ascontiguousarray(out[:, 1:]))) if hidden else p

    def routing(self, data: PreparedData, samples: pl.DataFrame) -> torch.Tensor:
        """The hidden vectors of any rows of the samples table. The lens reads its own long history
        (recent or retrieved 60) over the full data; users it never saw get its cold-start vector (their
        unknown-id embedding is zero)."""
        return self.predict(self.encode_samples(data, samples), hidden=True)[1]

    def scores(self, data: PreparedData, samples: pl.DataFrame) -> np.ndarray:
        return self.predict(self.encode_samples(data, samples))

    def _state(self) -> dict:
        return {"encoder": self.encoder.to_dict()}

    @classmethod
    def _network(cls, config: LensConfig, state: dict) -> DIN:
        encoder = FieldEncoder.from_dict(state["encoder"])
        return DIN(config.model, encoder.field_sizes(), encoder.user_fields)

    @classmethod
    def _restore(cls, config: LensConfig, model: DIN, state: dict) -> DINLens:
        return cls(config, FieldEncoder.from_dict(state["encoder"]), model, state["fingerprint"])


def _carried_over(
    start: DINLens, encoder: FieldEncoder, fresh: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """`fresh` (a new lens's state for `encoder`) with `start`'s weights: embedding rows moved to their
    value's code in `encoder`, every other weight copied."""
    tables = {f"user_embeddings.{i}.weight": f"user.{f}" for i, f in enumerate(encoder.user_fields)}
    tables |= {f"item_embeddings.{i}.weight": f"item.{f}" for i, f in enumerate(ITEM_FIELDS)}
    state = {name: tensor.clone() for name, tensor in fresh.items()}
    for name, weights in start.model.state_dict().items():
        if name not in tables:
            state[name] = weights.clone()
            continue
        code = {value: i + 1 for i, value in enumerate(encoder.vocabularies[tables[name]])}
        old = [(i + 1, code[value]) for i, value in enumerate(start.encoder.vocabularies[tables[name]])
               if value in code]  # fmt: skip
        if old:
            rows_from, rows_to = (torch.tensor(column) for column in zip(*old, strict=True))
            state[name][rows_to] = weights[rows_from]
    return state
