"""The shared LoRA (TALLRec/ReLLa baseline), built on PEFT and saved in PEFT's own format, so
`peft.PeftModel.from_pretrained` and multi-LoRA servers load it as is."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

from lifelora.adapters.lora.config import SharedLoraConfig
from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir


@contextmanager
def _without_peft_deprecation_notice():
    """transformers warns about a call PEFT makes internally; users cannot act on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def attach_lora(model, config: SharedLoraConfig):
    """Wrap the backbone in a PeftModel whose only trainable weights are the LoRA factors."""
    from peft import LoraConfig, get_peft_model

    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        modules_to_save=config.modules_to_save,
    )
    try:
        with _without_peft_deprecation_notice():
            return get_peft_model(model, peft_config)
    except ValueError as exc:
        raise LifeloraError(
            f"adapter.target_modules {config.target_modules!r}: {str(exc).splitlines()[0]}"
        ) from None


def save_adapter(model, directory: Path) -> Path:
    """A plain PEFT directory (adapter_config.json + adapter_model.safetensors), written atomically."""
    with atomic_dir(directory) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    return directory


def load_adapter(model, directory: Path, trainable: bool = False):
    from peft import PeftModel

    if not (Path(directory) / "adapter_config.json").is_file():
        raise LifeloraError(f"{directory}: not a PEFT adapter directory (no adapter_config.json)")
    try:
        with _without_peft_deprecation_notice():
            return PeftModel.from_pretrained(model, str(directory), is_trainable=trainable)
    except (ValueError, RuntimeError) as exc:
        raise LifeloraError(
            f"{directory}: cannot load onto this backbone ({str(exc).splitlines()[0]})"
        ) from None
