"""Adapter kinds: `lora` (one shared PEFT LoRA) and `personalized` (RecLoRA's meta-LoRA bank).

Attach, save, load and remove go through these functions, whichever the kind; a saved adapter
directory says its own kind by the config file it holds."""

from __future__ import annotations

from pathlib import Path

from lifelora.adapters.lora import SharedLoraConfig
from lifelora.adapters.personalized import PersonalizedConfig, PersonalizedModel
from lifelora.adapters.personalized.model import CONFIG_FILE as PERSONALIZED_CONFIG
from lifelora.errors import LifeloraError


def attach_adapter(model, config: SharedLoraConfig | PersonalizedConfig, routing_dim: int | None = None):
    """The backbone with a fresh trainable adapter; `routing_dim` is the lens's hidden size."""
    from lifelora.adapters.lora import attach_lora

    if isinstance(config, PersonalizedConfig):
        if routing_dim is None:
            raise LifeloraError("a personalized adapter needs a lens (its hidden size routes the bank)")
        return PersonalizedModel(model, config, routing_dim)
    return attach_lora(model, config)


def save_adapter(model, directory: Path) -> Path:
    from lifelora.adapters import lora

    if isinstance(model, PersonalizedModel):
        return model.save_pretrained(directory)
    return lora.save_adapter(model, directory)


def is_adapter_dir(directory: Path) -> bool:
    return (Path(directory) / "adapter_config.json").is_file() or (
        Path(directory) / PERSONALIZED_CONFIG
    ).is_file()


def load_adapter(model, directory: Path):
    from lifelora.adapters import lora

    if (Path(directory) / PERSONALIZED_CONFIG).is_file():
        return PersonalizedModel.from_pretrained(model, directory).eval()
    return lora.load_adapter(model, directory)


def remove_adapter(model):
    """The bare backbone again, so that one loaded backbone can serve several runs."""
    return model.unload() if hasattr(model, "unload") else model
