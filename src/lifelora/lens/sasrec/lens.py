"""The trained SASRec lens: next-item scores (the baseline row), per-sample user vectors (the routing
vector of a personalized next-item adapter), saved as safetensors + JSON (`lens.base`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import NextItemSamples
from lifelora.lens.base import Lens
from lifelora.lens.sasrec.config import SASRecConfig
from lifelora.lens.sasrec.network import SASRec, id_windows

STATE_FILE = "sasrec.json"


class SASRecLens(Lens):
    """A SASRec trained on one prepared dataset: next-item scores and per-sample user vectors.

    A user with no history (cold start) gets the model's output for an all-padding window: one learned
    vector, the same for every such user, and item scores from it (not an error)."""

    state_file = STATE_FILE
    what = "SASRec lens"
    config_class = SASRecConfig

    @classmethod
    def create(cls, config: SASRecConfig, data: PreparedData) -> SASRecLens:
        """An untrained lens over the dataset's whole item catalogue."""
        return cls(config, SASRec(config.model, data.items.height), data.meta["fingerprint"])

    @property
    def hidden_size(self) -> int:
        return self.config.model.hidden

    def windows(self, data: PreparedData, samples: NextItemSamples) -> torch.Tensor:
        """The model's input for each sample: its `max_len` most recent history items, ids shifted by 1."""
        self.check_matches(data)
        return id_windows(data, samples, self.config.model.max_len)

    @torch.no_grad()
    def _last_hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The last position's output per window, in batches of windows of similar length, each cut to
        its longest history (left padding never changes a real position's output)."""
        self.model.eval()
        device = next(self.model.parameters()).device
        out = torch.zeros(len(ids), self.hidden_size)
        order = torch.argsort((ids > 0).sum(dim=1))
        size = self.config.train.eval_batch_size
        for start in range(0, len(ids), size):
            rows = order[start : start + size]
            batch = ids[rows]
            real = (batch > 0).any(dim=0)
            # all cold start: one padding position gives the same output as a window of them
            first = int(real.int().argmax()) if real.any() else batch.shape[1] - 1
            out[rows] = self.model(batch[:, first:].to(device), last_only=True)[:, -1].float().cpu()
        return out

    def routing(self, data: PreparedData, samples: NextItemSamples) -> torch.Tensor:
        """[n, hidden]: the last position's hidden state over each sample's history window, the vector
        that routes a personalized LoRA (cold start: see the class docstring)."""
        return self._last_hidden(self.windows(data, samples))

    @torch.no_grad()
    def scores(self, data: PreparedData, samples: NextItemSamples) -> np.ndarray:
        """[n, n_items] next-item scores (float32) of each sample's target position."""
        hidden = self.routing(data, samples)
        weight = self.model.item_emb.weight[1:].detach().float().cpu()
        return (hidden @ weight.T).numpy()

    def scorer(self, data: PreparedData) -> Callable[[NextItemSamples], np.ndarray]:
        """`scores` bound to `data`: the score function `metrics.full_ranking` ranks with."""
        return lambda samples: self.scores(data, samples)

    def _state(self) -> dict:
        return {"n_items": self.model.n_items}

    @classmethod
    def _network(cls, config: SASRecConfig, state: dict) -> SASRec:
        return SASRec(config.model, state["n_items"])

    @classmethod
    def _restore(cls, config: SASRecConfig, model: SASRec, state: dict) -> SASRecLens:
        return cls(config, model, state["fingerprint"])
