"""Adapter kinds: `lora` (one shared PEFT LoRA); the personalized meta-LoRA bank plugs in beside it."""
