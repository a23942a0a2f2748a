"""The shared LoRA (TALLRec/ReLLa baseline), built on PEFT and saved in PEFT's own format."""

from lifelora.adapters.lora.config import LoraSettings, SharedLoraConfig
from lifelora.adapters.lora.model import attach_lora, load_adapter, save_adapter

__all__ = ["LoraSettings", "SharedLoraConfig", "attach_lora", "load_adapter", "save_adapter"]
