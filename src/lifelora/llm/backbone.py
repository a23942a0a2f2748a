"""Backbone loading: a Hugging Face id, a local directory, or the embedded SmolLM2 GGUF (cached once
as safetensors, so later loads take about a second)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, lifelora_home

EMBEDDED_MODELS = {"smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf"}
DEFAULT_MODEL = "smollm2-135m"


@dataclass
class Backbone:
    name: str
    model: torch.nn.Module
    tokenizer: object

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size


def model_key(name: str) -> str:
    """A file-name-safe key for caches that depend on the model (item embeddings)."""
    return name.strip("/").replace("/", "--")


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _embedded_dir(name: str, log) -> Path:
    """Dequantize the embedded GGUF once and keep it as a plain safetensors model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lifelora.data.embedded import fetch

    target = lifelora_home() / "models" / name
    if (target / "config.json").is_file():
        return target
    gguf_dir = fetch(name)
    log(f"converting the embedded {name} GGUF to safetensors (once, ~30 s)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=EMBEDDED_MODELS[name])
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=EMBEDDED_MODELS[name], dtype=torch.float32
    )
    model.hf_quantizer = None  # the weights are dequantized: plain float tensors from here on
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_model_dir(name: str, log=print) -> str:
    """The directory (or hub id) transformers should load for `name`."""
    if name in EMBEDDED_MODELS:
        return str(_embedded_dir(name, log))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise LifeloraError(f"{path}: not a model directory (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise LifeloraError(f"{name}: model directory not found")
    return name


def load_backbone(name: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, log=print) -> Backbone:
    """Load a causal LM and its tokenizer; the tokenizer pads on the left (answers sit at the end)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    source = resolve_model_dir(name, log)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as exc:
        raise LifeloraError(f"model {name!r}: {str(exc).splitlines()[0]}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return Backbone(name, model, tokenizer)
