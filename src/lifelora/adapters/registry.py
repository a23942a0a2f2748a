"""Adapter kinds by name: a config says its kind in `kind`, a saved directory by the config file it
holds, so callers never test which class they hold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Discriminator, Tag
from torch import nn

from lifelora.adapters.base import Adapter
from lifelora.adapters.lora import LoraAdapter, SharedLoraConfig
from lifelora.adapters.personalized import PersonalizedAdapter, PersonalizedConfig
from lifelora.errors import LifeloraError


def _adapter_kind(value) -> str:
    """An adapter section without `kind` is a shared LoRA (as before personalized adapters existed)."""
    return value.get("kind", "lora") if isinstance(value, dict) else value.kind


# the adapter section of a run config: any kind, told apart by `kind`
AdapterConfig = Annotated[
    Annotated[SharedLoraConfig, Tag("lora")] | Annotated[PersonalizedConfig, Tag("personalized")],
    Discriminator(_adapter_kind),
]
ADAPTER_KINDS: dict[str, type[Adapter]] = {cls.kind: cls for cls in (LoraAdapter, PersonalizedAdapter)}


def adapter_class(kind: str) -> type[Adapter]:
    try:
        return ADAPTER_KINDS[kind]
    except KeyError:
        raise LifeloraError(f"unknown adapter kind {kind!r} (known: {', '.join(ADAPTER_KINDS)})") from None


def is_routed(config: BaseModel | str) -> bool:
    """Whether an adapter of this config's kind (or this kind) is routed by a lens's vectors."""
    return adapter_class(config if isinstance(config, str) else config.kind).routed


def attach(base: nn.Module, config: BaseModel, routing_dim: int | None = None) -> Adapter:
    """The backbone with a fresh trainable adapter of `config.kind`; `routing_dim` is the lens's hidden size."""
    return adapter_class(config.kind).attach(base, config, routing_dim=routing_dim)


def kind_of(directory: Path) -> str | None:
    """The kind of adapter a saved directory holds; None when it holds none."""
    return next(
        (kind for kind, cls in ADAPTER_KINDS.items() if (Path(directory) / cls.config_file).is_file()), None
    )


def is_adapter_dir(directory: Path) -> bool:
    return kind_of(directory) is not None


def load(base: nn.Module, directory: Path, trainable: bool = False) -> Adapter:
    """A saved adapter of whichever kind the directory holds; frozen and in eval mode unless `trainable`."""
    kind = kind_of(directory)
    if kind is None:
        files = " or ".join(cls.config_file for cls in ADAPTER_KINDS.values())
        raise LifeloraError(f"{directory}: not an adapter directory (no {files})")
    return ADAPTER_KINDS[kind].load(base, directory, trainable=trainable)
