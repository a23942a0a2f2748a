"""The shared LoRA (TALLRec/ReLLa baseline), built on PEFT and saved in PEFT's own format, so
`peft.PeftModel.from_pretrained` and multi-LoRA servers load it as is.

Branches are PEFT adapters of one PeftModel, all active at once: PEFT's LoRA layers sum every active
adapter's delta. PEFT ties "active" to "trainable" (its set_adapter and add_adapter flip requires_grad), so
each change of branches puts every parameter's own requires_grad back afterwards.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from lifelora.adapters.base import DEFAULT_BRANCH, Adapter
from lifelora.adapters.lora.config import SharedLoraConfig
from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, read_json, write_json

CONFIG_FILE = "adapter_config.json"
PREFIX = "base_model.model."  # PEFT's wrapper path in front of the backbone's module paths


@contextmanager
def _peft_calls() -> Iterator[None]:
    """transformers warns about a call PEFT makes internally; users cannot act on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def _peft_config(config: SharedLoraConfig, base: nn.Module):
    from peft import LoraConfig
    from peft.utils.constants import EMBEDDING_LAYER_NAMES

    if config.modules_to_save and config.trainable_token_indices:
        raise LifeloraError(
            "adapter: modules_to_save trains whole modules and trainable_token_indices rows of the "
            "embeddings; set one of them"
        )
    saves_embeddings = any(m.split(".")[-1] in EMBEDDING_LAYER_NAMES for m in config.modules_to_save or [])
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        # a copy: PEFT edits this list in place when it ties a head to the embedding
        modules_to_save=list(config.modules_to_save) if config.modules_to_save else None,
        trainable_token_indices=_token_layers(base, config.trainable_token_indices),
        # a tied head and embedding train as one copy, not as two that drift apart (PEFT's default)
        ensure_weight_tying=saves_embeddings and _tied(base),
    )


@contextmanager
def _token_rows_skipped(model: nn.Module, skip: bool) -> Iterator[None]:
    """PEFT saves and loads one adapter by looking up every trainable-token wrapper's delta for it, and
    fails with a KeyError for an adapter that has none (a continual strategy's later branch, the rows
    staying in the first). With `skip`, the wrappers contribute nothing to that adapter's file."""
    from peft.utils.other import TrainableTokensWrapper

    wrappers = [m for m in model.modules() if skip and isinstance(m, TrainableTokensWrapper)]
    for module in wrappers:
        module.adapter_state_dict = lambda _name, _state: {}
        module.adapter_state_dict_load_map = lambda _name: {}
    try:
        yield
    finally:
        for module in wrappers:
            del module.adapter_state_dict, module.adapter_state_dict_load_map


def _tied(base: nn.Module) -> bool:
    head = base.get_output_embeddings()
    return head is not None and head.weight is base.get_input_embeddings().weight


def _token_layers(base: nn.Module, ids: list[int] | None) -> dict[str, list[int]] | None:
    """PEFT's `trainable_token_indices` naming both the input embedding and the LM head: the plain list
    form trains the input embedding only, which leaves an untied head's rows frozen (PEFT ties a tied
    head to the embedding's rows either way)."""
    if not ids:
        return None
    names = {id(module): name for name, module in base.named_modules()}
    layers = [base.get_input_embeddings(), base.get_output_embeddings()]
    return {names[id(layer)]: list(ids) for layer in layers if layer is not None}


def _settings(peft_config) -> SharedLoraConfig:
    """Our config of a saved PEFT LoRA (PEFT keeps target_modules as a set, token ids per layer)."""
    targets, tokens = peft_config.target_modules, peft_config.trainable_token_indices
    per_layer = tokens.values() if isinstance(tokens, dict) else [tokens or []]
    return SharedLoraConfig(
        r=peft_config.r,
        lora_alpha=peft_config.lora_alpha,
        lora_dropout=peft_config.lora_dropout,
        target_modules=targets if isinstance(targets, str) else sorted(targets),
        modules_to_save=list(peft_config.modules_to_save) if peft_config.modules_to_save else None,
        trainable_token_indices=[i for ids in per_layer for i in ids],
    )


def _target_error(config: SharedLoraConfig, exc: ValueError) -> LifeloraError:
    return LifeloraError(f"adapter.target_modules {config.target_modules!r}: {str(exc).splitlines()[0]}")


def _adapter_dir(directory: Path) -> Path:
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise LifeloraError(f"{directory}: not a PEFT adapter directory (no {CONFIG_FILE})")
    return directory


@contextmanager
def _loading(directory: Path) -> Iterator[None]:
    try:
        with _peft_calls():
            yield
    except (ValueError, RuntimeError, IndexError) as exc:  # IndexError: token rows past the vocabulary
        raise LifeloraError(
            f"{directory}: cannot load onto this backbone ({str(exc).splitlines()[0]})"
        ) from None


class LoraAdapter(Adapter):
    """One PeftModel; its PEFT adapters are the branches."""

    kind = "lora"
    config_class = SharedLoraConfig
    config_file = CONFIG_FILE

    def __init__(self, model: nn.Module, configs: dict[str, SharedLoraConfig]):
        self.model = model
        self._configs = configs

    @classmethod
    def _attach(
        cls, base: nn.Module, config: SharedLoraConfig, branch: str, routing_dim: int | None
    ) -> LoraAdapter:
        """`routing_dim` is ignored: a shared LoRA is the same for every instance."""
        from peft import get_peft_model

        try:
            with _peft_calls():
                model = get_peft_model(base, _peft_config(config, base), adapter_name=branch)
        except ValueError as exc:
            raise _target_error(config, exc) from None
        return cls(model, {branch: config})

    @classmethod
    def load(
        cls, base: nn.Module, directory: Path, *, trainable: bool = False, branch: str = DEFAULT_BRANCH
    ) -> LoraAdapter:
        from peft import PeftModel

        cls._check_branch_name(branch)
        directory = _adapter_dir(directory)
        with _loading(directory):
            model = PeftModel.from_pretrained(
                base, str(directory), adapter_name=branch, is_trainable=trainable
            )
        # PEFT leaves a branch loaded with is_trainable=False frozen and the model in eval mode
        return cls(model, {branch: _settings(model.peft_config[branch])})

    @classmethod
    def _check_branch_name(cls, name: str) -> None:
        super()._check_branch_name(name)
        if name in "lora_":  # PEFT would mistake the branch for its key prefix when loading weights
            raise LifeloraError(f"adapter branch name {name!r}: PEFT reserves parts of 'lora_'")

    def add_branch(
        self, name: str, config: SharedLoraConfig | None = None, *, trainable: bool = True
    ) -> None:
        self._check_new_branch(name)
        config = config or self.config(self.branches[0])
        self._check_summable(config)
        flags = self._requires_grad()
        try:
            with _peft_calls():
                self.model.add_adapter(name, _peft_config(config, self.model.get_base_model()))
        except ValueError as exc:
            raise _target_error(config, exc) from None
        self._configs[name] = config
        self._activate_all(flags, trainable)

    def load_branch(self, directory: Path, name: str, *, trainable: bool = False) -> None:
        from peft import LoraConfig

        self._check_new_branch(name)
        directory = _adapter_dir(directory)
        with _loading(directory):
            config = _settings(LoraConfig.from_pretrained(str(directory)))
        self._check_summable(config)
        flags, training = self._requires_grad(), self.model.training
        with _loading(directory), _token_rows_skipped(self.model, config.trainable_token_indices is None):
            self.model.load_adapter(str(directory), adapter_name=name, is_trainable=trainable)
        self.model.train(training)  # PEFT's load_adapter switches the whole model to eval mode
        self._configs[name] = config
        self._activate_all(flags, trainable)

    def remove_branch(self, name: str) -> None:
        self._check_removable(name)
        flags = self._requires_grad()
        self.model.delete_adapter(name)
        del self._configs[name]
        self._activate_all(flags, trainable=False)

    @property
    def branches(self) -> list[str]:
        return list(self._configs)

    def config(self, branch: str = DEFAULT_BRANCH) -> SharedLoraConfig:
        self._check_branch(branch)
        return self._configs[branch]

    def _check_summable(self, config: SharedLoraConfig) -> None:
        """PEFT keeps one active copy of a `modules_to_save` module, and trainable token rows replace the
        backbone's rather than add to them: such branches cannot be summed."""
        if config.modules_to_save or any(c.modules_to_save for c in self._configs.values()):
            raise LifeloraError(
                "adapter.modules_to_save: a LoRA with modules_to_save cannot have several branches"
            )
        if config.trainable_token_indices and any(c.trainable_token_indices for c in self._configs.values()):
            raise LifeloraError(
                "adapter.trainable_token_indices: PEFT cannot sum token rows over branches, so only one "
                "LoRA branch may train them (give the new one trainable_token_indices=None)"
            )

    def _requires_grad(self) -> dict[str, bool]:
        return {name: p.requires_grad for name, p in self.model.named_parameters()}

    def _activate_all(self, flags: dict[str, bool], trainable: bool) -> None:
        """Every branch active (summed); each parameter's requires_grad as in `flags`, new ones `trainable`."""
        self.model.base_model.set_adapter(self.branches)
        self.model.active_adapter = self.branches[0]  # PeftModel reads one branch's config for its forward
        for name, p in self.model.named_parameters():
            p.requires_grad_(flags.get(name, trainable))

    # --- weights -------------------------------------------------------------------------------------

    def branch_parameters(self, branch: str = DEFAULT_BRANCH) -> dict[str, nn.Parameter]:
        """PEFT's `base_model.model.{module}.lora_A.{branch}.weight` as `{module}.lora_A.weight` (token rows:
        `{embedding}.token_adapter.trainable_tokens_delta`)."""
        from peft.tuners.lora import LoraLayer
        from peft.tuners.trainable_tokens import TrainableTokensLayer

        self._check_branch(branch)
        holders = {
            *LoraLayer.adapter_layer_names,
            *TrainableTokensLayer.adapter_layer_names,
            "modules_to_save",
        }
        found = {}
        for name, p in self.model.named_parameters():
            parts = name.removeprefix(PREFIX).split(".")
            for i in range(1, len(parts)):
                if parts[i] == branch and parts[i - 1] in holders:
                    found[".".join(parts[:i] + parts[i + 1 :])] = p
                    break
        return found

    @contextmanager
    def disabled(self) -> Iterator[None]:
        with self.model.disable_adapter():
            yield

    @contextmanager
    def merged(self) -> Iterator[None]:
        """PEFT folds every active branch into the base weights (under bf16 autocast on a CPU, the
        separate fp32 LoRA path of 7 projections made decoding ~2.5x slower than the bare model).

        Unmerging subtracts the delta again, which is exact only up to rounding: repeated evaluations
        (a continual run's) would drift the shared backbone. The merged weights are copied first and put
        back bit for bit."""
        import torch
        from peft.tuners.tuners_utils import BaseTunerLayer

        originals = {
            id(weight): (weight, weight.detach().clone())
            for module in self.model.modules()
            if isinstance(module, BaseTunerLayer)
            for weight in [module.get_base_layer().weight]
        }
        with _peft_calls():
            self.model.merge_adapter()
        try:
            yield
        finally:
            self.model.unmerge_adapter()
            with torch.no_grad():
                for weight, original in originals.values():
                    weight.copy_(original)

    # --- files and teardown -------------------------------------------------------------------------

    def save(self, directory: Path, branch: str = DEFAULT_BRANCH) -> Path:
        """A plain PEFT directory (adapter_config.json + adapter_model.safetensors at its top)."""
        self._check_branch(branch)
        with atomic_dir(directory) as tmp:
            # the base's (resized) embedding stays out: trained token rows are stored as their own
            # values, so any base with the same vocabulary size loads them (PEFT would add 100+ MB)
            with _token_rows_skipped(self.model, self._configs[branch].trainable_token_indices is None):
                self.model.save_pretrained(
                    str(tmp), selected_adapters=[branch], safe_serialization=True, save_embedding_layers=False
                )
            if branch != DEFAULT_BRANCH:  # PEFT writes other adapters into a subdirectory named after them
                for path in (tmp / branch).iterdir():
                    path.replace(tmp / path.name)
                (tmp / branch).rmdir()
            hub_id = getattr(self.model.get_base_model(), "hub_id", None)
            if hub_id:  # an embedded backbone: PEFT named lifelora's cache, which only this machine has
                saved = read_json(tmp / CONFIG_FILE)  # (rewritten after saving: PEFT would look a Hub id up)
                write_json(tmp / CONFIG_FILE, {**saved, "base_model_name_or_path": hub_id})
        return Path(directory)

    def unload(self) -> nn.Module:
        base = self.model.unload()
        if hasattr(base, "peft_config"):  # PEFT leaves it behind; the next attach would warn about it
            del base.peft_config
        return base
