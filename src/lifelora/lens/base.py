"""The lens protocol: a conventional recommender trained on all the data, whose hidden vector routes a
personalized adapter and whose scores are a baseline row. Every kind (DIN/SIM for click-through, SASRec
for next-item) saves the same way (weights in `model.safetensors` + its state JSON), loads from its
directory or from a run directory holding it in `lens/`, and refuses data it was not trained on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from torch import nn

from lifelora.data.prepared import PreparedData, fingerprints
from lifelora.data.sequential import seen_before
from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, read_json, write_json
from lifelora.training import TrainSettings

WEIGHTS = "model.safetensors"


class LensTrainSettings(TrainSettings):
    """The shared training settings with a conventional model's defaults: one optimizer step per batch,
    a constant learning rate, no clipping, no mid-run checkpoints (each kind adds its own)."""

    grad_accum: int = Field(1, ge=1)
    schedule: Literal["linear", "constant"] = "constant"
    max_grad_norm: float | None = Field(None, gt=0)
    checkpoint_every: int | None = Field(None, ge=1)


def seen_and_users(data: PreparedData) -> tuple[Callable, np.ndarray]:
    """What full-ranking evaluation (`metrics.full_ranking`) reads of a dataset: each sample's seen items
    and the users' raw ids."""
    return partial(seen_before, data), data.users["user"].to_numpy()


class Lens(ABC):
    state_file: ClassVar[str]  # the JSON a saved lens of this kind holds
    what: ClassVar[str]  # how errors name it
    config_class: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel, model: nn.Module, fingerprint: str):
        self.config, self.model, self.fingerprint = config, model, fingerprint

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """The size of the routing vector."""

    @abstractmethod
    def routing(self, data: PreparedData, samples: Any) -> torch.Tensor:
        """[n, hidden_size] fp32: the vector that routes each sample's personalized adapter."""

    @abstractmethod
    def scores(self, data: PreparedData, samples: Any) -> np.ndarray:
        """The lens's own prediction for each sample (P(click), or every item's next-item score)."""

    def check_matches(self, data: PreparedData) -> None:
        if self.fingerprint not in fingerprints(data.meta):
            raise LifeloraError(
                f"{data.directory}: this {self.what} was trained on another dataset "
                f"(fingerprint {self.fingerprint}, data {data.meta['fingerprint']})"
            )

    def _state(self) -> dict[str, Any]:
        """What the state JSON records besides config, fingerprint and hidden size."""
        return {}

    @classmethod
    @abstractmethod
    def _network(cls, config: BaseModel, state: dict[str, Any]) -> nn.Module:
        """An untrained network of the saved shape, for the saved weights to load into."""

    @classmethod
    @abstractmethod
    def _restore(cls, config: BaseModel, model: nn.Module, state: dict[str, Any]) -> Lens:
        """The lens around a loaded network."""

    def save(self, directory: Path) -> None:
        with atomic_dir(directory) as tmp:
            weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(weights, str(tmp / WEIGHTS))
            state = {
                "config": self.config.model_dump(mode="json"),
                "fingerprint": self.fingerprint,
                "hidden_size": self.hidden_size,
            }
            write_json(tmp / self.state_file, state | self._state())

    @classmethod
    def load(cls, directory: str | Path) -> Lens:
        """A saved lens: the directory itself or a run directory holding it in `lens/`."""
        directory = Path(directory)
        if (directory / "lens" / cls.state_file).is_file():
            directory = directory / "lens"
        if not (directory / cls.state_file).is_file():
            raise LifeloraError(
                f"{directory}: not a {cls.what} (no {cls.state_file}); train one with `lifelora lens train`"
            )
        state = read_json(directory / cls.state_file)
        config = cls.config_class.model_validate(state["config"])
        model = cls._network(config, state)
        try:
            model.load_state_dict(load_file(str(directory / WEIGHTS)))
        except Exception as exc:  # safetensors and torch raise several types for a bad file
            raise LifeloraError(f"{directory / WEIGHTS}: cannot load {cls.what} weights ({exc})") from None
        model.eval()
        return cls._restore(config, model, state)
