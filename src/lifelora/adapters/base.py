"""The adapter protocol: what every adapter kind (`lora`, `personalized`) does the same way, so that
jobs and continual strategies never ask which kind they hold.

An `Adapter` is a backbone with one or more named **branches** of one kind, summed in the forward
(PEFT's multi-adapter for `lora`, stacked meta-LoRA banks for `personalized`). Each branch is
trainable or frozen on its own. `model` is the `nn.Module` to call and to hand to the training loop.

Parameter names returned by `branch_parameters()` and `snapshot()` are stable: the adapted module's path in
the backbone plus the factor's own name, without the branch name or any wrapper prefix, so the same name
means the same tensor whichever process, wrapper or branch it comes from. They are the keys of the kind's
saved file without its wrapper prefix: `model.layers.0.self_attn.q_proj.lora_A.weight` for `lora` (PEFT's
key minus `base_model.model.`), `model.layers.0.self_attn.q_proj.lora_A`, `...lora_B` and
`...gate.net.1.weight` for `personalized`. Trainable token rows (`trainable_token_indices`) are
`model.embed_tokens.token_adapter.trainable_tokens_delta` for `lora` and `model.embed_tokens.token_delta`
for `personalized`, plus the same under `lm_head.` when the head is not tied to the embedding.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from lifelora.errors import LifeloraError

DEFAULT_BRANCH = "default"
# no "." (parameter paths hold the name) and no "/" (PEFT saves a branch in a folder named after it)
_BRANCH_NAME = re.compile(r"[A-Za-z0-9_-]+")


class Adapter(ABC):
    kind: ClassVar[str]  # the config's `kind` and the registry's key
    config_class: ClassVar[type[BaseModel]]
    config_file: ClassVar[str]  # the file a saved directory of this kind holds (how `load` tells kinds apart)
    routed: ClassVar[bool] = False  # its forward takes per-row routing vectors from a lens

    model: nn.Module

    # --- building ------------------------------------------------------------------------------------

    @classmethod
    def attach(
        cls,
        base: nn.Module,
        config: BaseModel,
        *,
        branch: str = DEFAULT_BRANCH,
        routing_dim: int | None = None,
    ) -> Adapter:
        """The backbone with one fresh, trainable branch; only adapter weights train, the backbone is frozen.

        `routing_dim` is the lens's hidden size (required by kinds that route per instance)."""
        cls._check_branch_name(branch)
        return cls._attach(base, config, branch, routing_dim)

    @classmethod
    @abstractmethod
    def _attach(cls, base: nn.Module, config: BaseModel, branch: str, routing_dim: int | None) -> Adapter:
        """`attach` of this kind, the branch name checked."""

    @classmethod
    @abstractmethod
    def load(
        cls, base: nn.Module, directory: Path, *, trainable: bool = False, branch: str = DEFAULT_BRANCH
    ) -> Adapter:
        """A saved branch on the backbone; `trainable=False` = frozen and in eval mode, for every kind."""

    @abstractmethod
    def add_branch(self, name: str, config: BaseModel | None = None, *, trainable: bool = True) -> None:
        """A fresh branch (initialised as `attach` does; default config: the first branch's), summed in."""

    @abstractmethod
    def load_branch(self, directory: Path, name: str, *, trainable: bool = False) -> None:
        """A saved branch added beside the current ones."""

    @abstractmethod
    def remove_branch(self, name: str) -> None:
        """Drop a branch; the last one cannot go (`unload` gives the bare backbone back)."""

    @property
    @abstractmethod
    def branches(self) -> list[str]:
        """Branch names, in the order they were added."""

    @abstractmethod
    def config(self, branch: str = DEFAULT_BRANCH) -> BaseModel: ...

    # --- weights -------------------------------------------------------------------------------------

    @abstractmethod
    def branch_parameters(self, branch: str = DEFAULT_BRANCH) -> dict[str, nn.Parameter]:
        """The branch's live parameters under stable names (see the module docstring)."""

    def snapshot(self, branch: str = DEFAULT_BRANCH) -> dict[str, torch.Tensor]:
        """A frozen copy of the branch's current weights (what a proximal anchor needs)."""
        return {name: p.detach().clone() for name, p in self.branch_parameters(branch).items()}

    def freeze(self, branch: str | None = None) -> None:
        """No gradient reaches the branch (all branches when None)."""
        for name in [branch] if branch is not None else self.branches:
            for p in self.branch_parameters(name).values():
                p.requires_grad_(False)

    def _check_branch(self, name: str) -> None:
        if name not in self.branches:
            raise LifeloraError(f"no adapter branch {name!r} (branches: {', '.join(self.branches)})")

    @classmethod
    def _check_branch_name(cls, name: str) -> None:
        if not _BRANCH_NAME.fullmatch(name):
            raise LifeloraError(f"adapter branch name {name!r}: use letters, digits, '_' and '-' only")

    def _check_new_branch(self, name: str) -> None:
        self._check_branch_name(name)
        if name in self.branches:
            raise LifeloraError(f"adapter branch {name!r} exists already")

    def _check_removable(self, name: str) -> None:
        self._check_branch(name)
        if len(self.branches) == 1:
            raise LifeloraError(f"{name!r} is the adapter's last branch: unload() gives the bare backbone")

    @abstractmethod
    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Inside the block the model computes the bare backbone's outputs."""

    @contextmanager
    def merged(self) -> Iterator[None]:
        """For inference: inside the block the adapter may be folded into the backbone's weights, so
        the forward costs what the bare backbone's does (same outputs up to rounding). Kinds that
        cannot merge (a per-instance mixture) run as they are."""
        yield

    # --- files and teardown -------------------------------------------------------------------------

    @abstractmethod
    def save(self, directory: Path, branch: str = DEFAULT_BRANCH) -> Path:
        """One branch in the kind's own format, written atomically."""

    @abstractmethod
    def unload(self) -> nn.Module:
        """The bare backbone again (the same module object, its layers restored)."""
