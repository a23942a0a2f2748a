"""Adapter kinds: `lora` (one shared PEFT LoRA) and `personalized` (RecLoRA's meta-LoRA bank), both
behind the `Adapter` protocol; the registry finds a kind by name (a config's `kind`, a saved directory's
config file)."""

from lifelora.adapters.base import DEFAULT_BRANCH, Adapter
from lifelora.adapters.lora import LoraAdapter, LoraSettings, SharedLoraConfig
from lifelora.adapters.personalized import PersonalizedAdapter, PersonalizedConfig
from lifelora.adapters.registry import (
    ADAPTER_KINDS,
    AdapterConfig,
    adapter_class,
    attach,
    is_adapter_dir,
    is_routed,
    kind_of,
    load,
)

__all__ = [
    "ADAPTER_KINDS",
    "DEFAULT_BRANCH",
    "Adapter",
    "AdapterConfig",
    "LoraAdapter",
    "LoraSettings",
    "PersonalizedAdapter",
    "PersonalizedConfig",
    "SharedLoraConfig",
    "adapter_class",
    "attach",
    "is_adapter_dir",
    "is_routed",
    "kind_of",
    "load",
]
