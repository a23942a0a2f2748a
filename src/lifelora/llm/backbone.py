"""Backbone loading: a Hugging Face id, a local directory, or the embedded SmolLM2 GGUF (cached once
as safetensors, so later loads take about a second)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import torch

from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, lifelora_home

EMBEDDED_MODELS = {"smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf"}
# The Hugging Face id of each embedded model: what saved adapters name as their base model, so that
# `AutoPeftModelForCausalLM.from_pretrained(ADAPTER_DIR)` finds it without lifelora.
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
DEFAULT_MODEL = "smollm2-135m"


@dataclass
class Backbone:
    name: str
    model: torch.nn.Module
    tokenizer: object
    hub_id: str | None = None  # the Hugging Face id of an embedded model

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def base_model_name(self) -> str:
        """What an adapter's `base_model_name_or_path` should say: the Hub id, else the name as given."""
        return self.hub_id or self.name


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


def _unknown(name: str, why: str) -> LifeloraError:
    close = difflib.get_close_matches(name, EMBEDDED_MODELS, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return LifeloraError(
        f"model {name!r} is not an embedded model ({', '.join(EMBEDDED_MODELS)}) or a local directory, "
        f"and {why}{hint}"
    )


def check_hub_model(name: str) -> bool:
    """Ask the Hub once for a model id before transformers does (it retries for about a minute when the
    Hub is unreachable): a wrong name fails at once. True when the model should load from the local
    Hugging Face cache only (offline, or the Hub unreachable, and the model cached)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except HFValidationError:
        raise _unknown(name, "not a valid Hugging Face id") from None
    if constants.HF_HUB_OFFLINE:
        if cached:
            return True
        raise _unknown(name, "not in the Hugging Face cache (HF_HUB_OFFLINE is set)")
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"))  # one request, no retries
    except GatedRepoError:
        raise LifeloraError(
            f"model {name!r} is gated on the Hugging Face Hub: accept its terms there, then `hf auth login`"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise _unknown(name, "not a model on the Hugging Face Hub") from None
    except Exception as exc:  # the Hub's HTTP client's network errors (their classes vary by version)
        if cached:
            return True
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _unknown(name, f"not cached, with the Hugging Face Hub unreachable ({reason})") from None
    return False


def load_backbone(name: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, log=print) -> Backbone:
    """Load a causal LM and its tokenizer; the tokenizer pads on the left (answers sit at the end)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    source = resolve_model_dir(name, log)
    local = Path(source).is_dir() or check_hub_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local)
    except OSError as exc:
        raise LifeloraError(f"model {name!r}: {str(exc).splitlines()[0]}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    hub_id = HUB_IDS.get(name)
    if hub_id:
        model.hub_id = hub_id  # what a saved shared LoRA names as its base (`LoraAdapter.save`)
    return Backbone(name, model, tokenizer, hub_id)
