"""Wrap a causal LM with personalized layers (one meta-LoRA bank per branch in each); save/load one
branch's bank and gates; export one instance's LoRA as a plain PEFT adapter.

A saved branch is `personalized_config.json` + `personalized_model.safetensors` with keys
`{layer_name}.lora_A`, `{layer_name}.lora_B`, `{layer_name}.gate.net...`, whatever the branch's name, and,
with `trainable_token_indices`, the token rows' `{embedding}.token_delta` (`{head}.token_delta` if untied).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lifelora.adapters.base import DEFAULT_BRANCH, Adapter
from lifelora.adapters.personalized.config import PersonalizedConfig
from lifelora.adapters.personalized.layer import MetaLoraBank, PersonalizedLinear
from lifelora.adapters.personalized.routing import (
    banks_disabled,
    checkpoint_context,
    disabled_context,
    routing_context,
)
from lifelora.adapters.personalized.tokens import (
    add_token_rows,
    peft_token_rows,
    remove_token_rows,
    token_row_parameters,
)
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
    train. `forward(..., routing=h)` takes one routing vector per instance (h [B, d]) or, for banks
    mixing products, one per token (h [B, T, d], T the input length: no cached decoding), shared by
    every branch."""

    def __init__(
        self,
        base_model: nn.Module,
        config: PersonalizedConfig,
        routing_dim: int,
        branch: str = DEFAULT_BRANCH,
    ):
        super().__init__()
        self.base_model = base_model
        self.routing_dim = routing_dim
        self.configs: dict[str, PersonalizedConfig] = {}  # per branch, in the order added
        for p in base_model.parameters():
            p.requires_grad_(False)
        self.add_branch(branch, config)

    def add_branch(self, branch: str, config: PersonalizedConfig) -> None:
        """A fresh bank named `branch` in every layer the config targets (layers are created as needed)."""
        if config.routing_dim is not None and config.routing_dim != self.routing_dim:
            raise LifeloraError(
                f"adapter.routing_dim is {config.routing_dim} but the routing vectors have {self.routing_dim}"
            )
        config = config.model_copy(update={"routing_dim": self.routing_dim})
        targets = self._targets(config)
        if not targets:
            raise LifeloraError(
                f"adapter.target_modules {config.target_modules!r} match no linear layer of the model"
            )
        if config.trainable_token_indices:
            add_token_rows(self.base_model, branch, config.trainable_token_indices)
        for name in targets:
            module = self.base_model.get_submodule(name)
            if not isinstance(module, PersonalizedLinear):
                module = PersonalizedLinear(module)
                self._replace(name, module)
            module.add_bank(branch, config, self.routing_dim)
        self.configs[branch] = config

    def _targets(self, config: PersonalizedConfig) -> list[str]:
        """Linear layers (or personalized ones) the config matches, never a layer inside a personalized one."""
        targets, inside = [], None
        for name, module in self.base_model.named_modules():
            if inside is not None and name.startswith(inside):  # its base layer and gates
                continue
            if isinstance(module, PersonalizedLinear):
                inside = name + "."
            if isinstance(module, nn.Linear | PersonalizedLinear) and _matches(config, name):
                targets.append(name)
        return targets

    def _replace(self, name: str, module: nn.Module) -> None:
        parent_name, _, child = name.rpartition(".")
        setattr(self.base_model.get_submodule(parent_name), child, module)

    def remove_branch(self, branch: str) -> None:
        """Drop the branch's banks; a layer left without any gets its original linear back."""
        for name, layer in self.personalized_layers().items():
            if branch in layer.banks:
                del layer.banks[branch]
                if not layer.banks:
                    self._replace(name, layer.base_layer)
        remove_token_rows(self.base_model, branch)
        del self.configs[branch]

    def unload(self) -> nn.Module:
        """The backbone with its original linear layers back (as PEFT's `unload`)."""
        for name, layer in self.personalized_layers().items():
            self._replace(name, layer.base_layer)
        remove_token_rows(self.base_model)
        self.configs.clear()
        return self.base_model

    def personalized_layers(self) -> dict[str, PersonalizedLinear]:
        return {
            name: module
            for name, module in self.base_model.named_modules()
            if isinstance(module, PersonalizedLinear)
        }

    def banks(self, branch: str = DEFAULT_BRANCH) -> dict[str, MetaLoraBank]:
        """The branch's bank in each layer it adapts, by layer name."""
        return {
            name: layer.banks[branch]
            for name, layer in self.personalized_layers().items()
            if branch in layer.banks
        }

    def _routed(self, routing: torch.Tensor | None) -> AbstractContextManager:
        if routing is None and not banks_disabled():
            raise LifeloraError("PersonalizedModel.forward needs routing= (one routing vector per instance)")
        return routing_context(routing)

    def forward(self, *args, routing: torch.Tensor | None = None, **kwargs):
        with self._routed(routing):
            return self.base_model(*args, **kwargs)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.base_model.get_output_embeddings()

    def generate(self, *args, routing: torch.Tensor | None = None, **kwargs):
        with self._routed(routing):
            return self.base_model.generate(*args, **kwargs)

    def gradient_checkpointing_enable(self) -> None:
        kwargs = {"use_reentrant": False, "context_fn": checkpoint_context}
        if hasattr(self.base_model, "activation_checkpointing_enable"):  # transformers ≥ 5.x name
            self.base_model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    @torch.no_grad()
    def mixing_weights(self, routing: torch.Tensor, branch: str = DEFAULT_BRANCH) -> dict[str, torch.Tensor]:
        return {name: bank.mixing_weights(routing) for name, bank in self.banks(branch).items()}

    def export_instance(
        self, routing: torch.Tensor, directory: Path, base_model_name: str | None = None
    ) -> Path:
        """One instance's LoRA as a plain PEFT adapter directory (rank r for factors, N·r for products),
        with its token rows as PEFT's trainable tokens."""
        from peft import LoraConfig

        if len(self.configs) != 1:
            raise LifeloraError(
                f"export_instance needs a personalized adapter with one branch, this one has "
                f"{len(self.configs)} ({', '.join(self.configs)})"
            )
        [(branch, config)] = self.configs.items()
        routing = routing.reshape(1, -1)
        tensors, rank = {}, None
        banks = self.banks(branch)
        for name, bank in banks.items():
            a, b, rank = bank.instance_lora(routing)
            tensors[f"base_model.model.{name}.lora_A.weight"] = a.float().contiguous()
            tensors[f"base_model.model.{name}.lora_B.weight"] = b.float().contiguous()
        token_tensors, token_indices = peft_token_rows(self.base_model, branch)
        peft_config = LoraConfig(
            task_type="CAUSAL_LM",
            r=rank,
            lora_alpha=config.scaling * rank,  # PEFT scales by alpha / r: keep alpha / r the same
            lora_dropout=config.lora_dropout,
            target_modules=list(banks),  # exact names: the same layers, nothing more
            trainable_token_indices=token_indices or None,
            base_model_name_or_path=base_model_name,
        )
        with atomic_dir(directory) as tmp:
            peft_config.save_pretrained(str(tmp))
            save_file({**tensors, **token_tensors}, str(tmp / "adapter_model.safetensors"))
        return Path(directory)


def _shapes(banks: dict[str, MetaLoraBank]) -> dict[str, list[int]]:
    """[d_in, d_out] of each adapted layer: what tells a saved branch's backbone apart."""
    return {name: [bank.lora_A.shape[-1], bank.lora_B.shape[1]] for name, bank in banks.items()}


def _read_saved(
    directory: Path, base_model: nn.Module
) -> tuple[PersonalizedConfig, dict, dict[str, torch.Tensor]]:
    """A saved branch's config, target layer shapes and tensors, once it is known to fit this backbone."""
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
    try:
        weights = load_file(str(directory / WEIGHTS_FILE))
    except Exception as exc:  # safetensors raises several types for a bad file
        raise LifeloraError(f"{directory / WEIGHTS_FILE}: unreadable ({exc})") from None
    return config, saved["modules"], weights


class PersonalizedAdapter(Adapter):
    """A `PersonalizedModel`; its banks' names are the branches."""

    kind = "personalized"
    config_class = PersonalizedConfig
    config_file = CONFIG_FILE
    routed = True

    def __init__(self, model: PersonalizedModel):
        self.model = model

    @classmethod
    def _attach(
        cls, base: nn.Module, config: PersonalizedConfig, branch: str, routing_dim: int | None
    ) -> PersonalizedAdapter:
        if routing_dim is None:
            raise LifeloraError("a personalized adapter needs a lens (its hidden size routes the bank)")
        return cls(PersonalizedModel(base, config, routing_dim, branch))

    @classmethod
    def load(
        cls, base: nn.Module, directory: Path, *, trainable: bool = False, branch: str = DEFAULT_BRANCH
    ) -> PersonalizedAdapter:
        cls._check_branch_name(branch)
        config, modules, weights = _read_saved(directory, base)
        adapter = cls.attach(base, config, branch=branch, routing_dim=config.routing_dim)
        try:
            adapter._fill(branch, directory, modules, weights)
        except LifeloraError:
            adapter.unload()
            raise
        if not trainable:
            adapter.freeze()
            adapter.model.eval()
        return adapter

    def add_branch(
        self, name: str, config: PersonalizedConfig | None = None, *, trainable: bool = True
    ) -> None:
        self._check_new_branch(name)
        self.model.add_branch(name, config or self.config(self.branches[0]))
        if not trainable:
            self.freeze(name)

    def load_branch(self, directory: Path, name: str, *, trainable: bool = False) -> None:
        self._check_new_branch(name)
        config, modules, weights = _read_saved(directory, self.model.base_model)
        self.model.add_branch(name, config)
        try:
            self._fill(name, directory, modules, weights)
        except LifeloraError:
            self.model.remove_branch(name)
            raise
        if not trainable:
            self.freeze(name)

    def _fill(self, branch: str, directory: Path, modules: dict, weights: dict[str, torch.Tensor]) -> None:
        """Copy saved tensors into a fresh branch, once its layers and tensors match the saved ones."""
        if _shapes(self.model.banks(branch)) != modules:
            raise LifeloraError(
                f"{directory}: adapter made for another base model (target layer shapes differ)"
            )
        params = self.branch_parameters(branch)
        mismatched = set(params) ^ set(weights)
        if mismatched:
            raise LifeloraError(
                f"{Path(directory) / WEIGHTS_FILE}: tensors do not match the config ({sorted(mismatched)[0]})"
            )
        with torch.no_grad():
            for key, value in weights.items():
                params[key].copy_(value)

    def remove_branch(self, name: str) -> None:
        self._check_removable(name)
        self.model.remove_branch(name)

    @property
    def branches(self) -> list[str]:
        return list(self.model.configs)

    def config(self, branch: str = DEFAULT_BRANCH) -> PersonalizedConfig:
        """The branch's config, its routing_dim filled in."""
        self._check_branch(branch)
        return self.model.configs[branch]

    def branch_parameters(self, branch: str = DEFAULT_BRANCH) -> dict[str, nn.Parameter]:
        self._check_branch(branch)
        return {
            **{
                f"{layer}.{key}": p
                for layer, bank in self.model.banks(branch).items()
                for key, p in bank.named_parameters()
            },
            **token_row_parameters(self.model.base_model, branch),
        }

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """No bank runs inside (so `routing=` may be left out): the bare backbone's outputs."""
        with disabled_context():
            yield

    def save(self, directory: Path, branch: str = DEFAULT_BRANCH) -> Path:
        tensors = {name: p.detach().cpu().contiguous() for name, p in self.branch_parameters(branch).items()}
        with atomic_dir(directory) as tmp:
            save_file(tensors, str(tmp / WEIGHTS_FILE))
            write_json(
                tmp / CONFIG_FILE,
                {
                    "config": self.config(branch).model_dump(mode="json"),
                    "base_model": base_identity(self.model.base_model),
                    "modules": _shapes(self.model.banks(branch)),
                },
            )
        return Path(directory)

    def unload(self) -> nn.Module:
        return self.model.unload()
