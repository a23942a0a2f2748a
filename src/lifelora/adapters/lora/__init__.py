"""The shared LoRA (TALLRec/ReLLa baseline), built on PEFT and saved in PEFT's own format."""

from lifelora.adapters.lora.config import LoraSettings, SharedLoraConfig
from lifelora.adapters.lora.model import LoraAdapter

__all__ = ["LoraAdapter", "LoraSettings", "SharedLoraConfig"]
