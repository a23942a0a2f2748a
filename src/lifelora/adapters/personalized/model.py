"""Wrap a causal LM with personalized layers; save/load the bank and gates; export one instance's
LoRA as a plain PEFT adapter."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lifelora.adapters.personalized.config import PersonalizedConfig
from lifelora.adapters.personalized.layer import PersonalizedLinear
from lifelora.adapters.personalized.routing import checkpoint_context, routing_context
from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, read_json, write_json

CONFIG_FILE = "personalized_config.json"
WEIGHTS_FILE = "personalized_model.safetensors"


def _matches(config: PersonalizedConfig, name: str) -> bool:
    """PEFT's own target_modules matching rules (exact names, suffixes or a full regex)."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    return bool(check_target_module_exists(LoraConfig(target_modules=config.target_modules), name))


def base_identity(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
    return {key: getattr(config, key, None) for key in keys}


class PersonalizedModel(nn.Module):
    """The backbone with its target linears replaced by `PersonalizedLinear`; only banks and gates
    train. `forward(..., routing=h)` takes one routing vector per instance (rows of h)."""

    def __init__(self, base_model: nn.Module, config: PersonalizedConfig, routing_dim: int):
        super().__init__()
        if config.routing_dim is not None and config.routing_dim != routing_dim:
            raise LifeloraError(
                f"adapter.routing_dim is {config.routing_dim} but the routing vectors have {routing_dim}"
            )
        self.config = config.model_copy(update={"routing_dim": routing_dim})
        self.base_model = base_model
        for p in base_model.parameters():
            p.requires_grad_(False)
        targets = [
            name
            for name, module in base_model.named_modules()
            if isinstance(module, nn.Linear) and _matches(config, name)
        ]
        if not targets:
            raise LifeloraError(
                f"adapter.target_modules {config.target_modules!r} match no linear layer of the model"
            )
        for name in targets:
            parent_name, _, child = name.rpartition(".")
            parent = base_model.get_submodule(parent_name) if parent_name else base_model
            setattr(parent, child, PersonalizedLinear(getattr(parent, child), self.config, routing_dim))
        self.target_names = targets

    def unload(self) -> nn.Module:
        """The backbone with its original linear layers back (as PEFT's `unload`)."""
        for name, layer in self.personalized_layers().items():
            parent_name, _, child = name.rpartition(".")
            parent = self.base_model.get_submodule(parent_name) if parent_name else self.base_model
            setattr(parent, child, layer.base_layer)
        return self.base_model

    @property
    def routing_dim(self) -> int:
        return self.config.routing_dim

    def personalized_layers(self) -> dict[str, PersonalizedLinear]:
        return {name: self.base_model.get_submodule(name) for name in self.target_names}

    def forward(self, *args, routing: torch.Tensor | None = None, **kwargs):
        if routing is None:
            raise LifeloraError("PersonalizedModel.forward needs routing= (one routing vector per instance)")
        with routing_context(routing):
            return self.base_model(*args, **kwargs)

    def generate(self, *args, routing: torch.Tensor, **kwargs):
        with routing_context(routing):
            return self.base_model.generate(*args, **kwargs)

    def gradient_checkpointing_enable(self) -> None:
        kwargs = {"use_reentrant": False, "context_fn": checkpoint_context}
        if hasattr(self.base_model, "activation_checkpointing_enable"):  # transformers ≥ 5.x name
            self.base_model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    @torch.no_grad()
    def mixing_weights(self, routing: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: layer.mixing_weights(routing) for name, layer in self.personalized_layers().items()}

    def adapter_state(self) -> dict[str, torch.Tensor]:
        state = {}
        for name, layer in self.personalized_layers().items():
            for key, value in layer.state_dict().items():
                if not key.startswith("base_layer."):
                    state[f"{name}.{key}"] = value.detach().cpu().contiguous()
        return state

    def save_pretrained(self, directory: Path) -> Path:
        with atomic_dir(directory) as tmp:
            save_file(self.adapter_state(), str(tmp / WEIGHTS_FILE))
            write_json(
                tmp / CONFIG_FILE,
                {
                    "config": self.config.model_dump(mode="json"),
                    "base_model": base_identity(self.base_model),
                    "modules": {
                        name: [layer.base_layer.in_features, layer.base_layer.out_features]
                        for name, layer in self.personalized_layers().items()
                    },
                },
            )
        return Path(directory)

    @classmethod
    def from_pretrained(cls, base_model: nn.Module, directory: Path) -> PersonalizedModel:
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise LifeloraError(f"{directory}: not a personalized adapter (no {CONFIG_FILE})")
        saved = read_json(directory / CONFIG_FILE)
        config = PersonalizedConfig.model_validate(saved["config"])
        identity = base_identity(base_model)
        differs = [k for k, v in saved["base_model"].items() if identity.get(k) != v]
        if differs:
            key = differs[0]
            raise LifeloraError(
                f"{directory}: adapter made for another base model "
                f"({key} {saved['base_model'][key]} there, {identity.get(key)} here)"
            )
        model = cls(base_model, config, config.routing_dim)
        shapes = {
            n: [m.base_layer.in_features, m.base_layer.out_features]
            for n, m in model.personalized_layers().items()
        }
        if shapes != saved["modules"]:
            raise LifeloraError(
                f"{directory}: adapter made for another base model (target layer shapes differ)"
            )
        try:
            weights = load_file(str(directory / WEIGHTS_FILE))
        except Exception as exc:  # safetensors raises several types for a bad file
            raise LifeloraError(f"{directory / WEIGHTS_FILE}: unreadable ({exc})") from None
        missing = set(model.adapter_state()) ^ set(weights)
        if missing:
            raise LifeloraError(
                f"{directory / WEIGHTS_FILE}: tensors do not match the config ({sorted(missing)[0]})"
            )
        layers = model.personalized_layers()
        with torch.no_grad():
            for key, value in weights.items():
                layer_name = next(n for n in layers if key.startswith(n + "."))
                layers[layer_name].get_parameter(key[len(layer_name) + 1 :]).copy_(value)
        return model

    def export_instance(
        self, routing: torch.Tensor, directory: Path, base_model_name: str | None = None
    ) -> Path:
        """One instance's LoRA as a plain PEFT adapter directory (rank r for factors, N·r for products)."""
        from peft import LoraConfig

        routing = routing.reshape(1, -1)
        tensors, rank = {}, None
        for name, layer in self.personalized_layers().items():
            a, b, rank = layer.instance_lora(routing)
            tensors[f"base_model.model.{name}.lora_A.weight"] = a.float().contiguous()
            tensors[f"base_model.model.{name}.lora_B.weight"] = b.float().contiguous()
        peft_config = LoraConfig(
            task_type="CAUSAL_LM",
            r=rank,
            lora_alpha=self.config.scaling * rank,  # PEFT scales by alpha / r: keep alpha / r the same
            lora_dropout=self.config.lora_dropout,
            target_modules=list(self.target_names),  # exact names: the same layers, nothing more
            base_model_name_or_path=base_model_name,
        )
        with atomic_dir(directory) as tmp:
            peft_config.save_pretrained(str(tmp))
            save_file(tensors, str(tmp / "adapter_model.safetensors"))
        return Path(directory)
