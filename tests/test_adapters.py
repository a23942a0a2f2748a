"""The adapter protocol, the same assertions for every kind (`lora`, `personalized`) on a tiny random Llama:
what trains, branches summed and frozen one by one, snapshots, save/load, unload, the registry."""

from __future__ import annotations

import re

import pytest
import torch
from tiny_llm import tiny_model

from lifelora.adapters import (
    ADAPTER_KINDS,
    DEFAULT_BRANCH,
    Adapter,
    LoraAdapter,
    PersonalizedConfig,
    SharedLoraConfig,
    adapter_class,
    attach,
    is_adapter_dir,
    kind_of,
    load,
)
from lifelora.errors import LifeloraError

VOCAB, ROUTING_DIM = 64, 12
KINDS = ["lora", "personalized"]


def config(kind: str, **changes):
    if kind == "lora":
        return SharedLoraConfig(r=2, **changes)
    return PersonalizedConfig(n_loras=3, r=2, temperature=1.0, gate_dropout=0.0, **changes)


def backbone():
    return tiny_model("llama", VOCAB, seed=0)


def attached(kind: str, **changes) -> Adapter:
    torch.manual_seed(1)
    adapter = attach(backbone(), config(kind, **changes), routing_dim=ROUTING_DIM)
    randomize_b(adapter)
    return adapter


@torch.no_grad()
def randomize_b(adapter: Adapter, branch: str = DEFAULT_BRANCH, scale: float = 0.5) -> None:
    """B starts at zero: a branch changes the outputs only once B is non-zero (scale 0: back to zero)."""
    for name, p in adapter.branch_parameters(branch).items():
        if "lora_B" in name:
            p.normal_(0, scale)


def batch():
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, VOCAB, (3, 7), generator=g), torch.randn(3, ROUTING_DIM, generator=g)


def logits(model: torch.nn.Module, kind: str) -> torch.Tensor:
    ids, routing = batch()
    extra = {"routing": routing} if kind == "personalized" else {}
    return model(input_ids=ids, **extra).logits


@torch.no_grad()
def outputs(adapter: Adapter) -> torch.Tensor:
    return logits(adapter.model.eval(), adapter.kind)


def sgd_step(adapter: Adapter) -> None:
    adapter.model.train()
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    logits(adapter.model, adapter.kind).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_adapter_weights_train_under_stable_names(kind):
    adapter = attached(kind)
    assert adapter.kind == kind and adapter.branches == [DEFAULT_BRANCH]
    params = adapter.branch_parameters()
    trainable = [p for p in adapter.model.parameters() if p.requires_grad]
    assert params and {id(p) for p in trainable} == {id(p) for p in params.values()}
    factor = "lora_A.weight" if kind == "lora" else "lora_A"
    assert f"model.layers.0.self_attn.q_proj.{factor}" in params
    assert all(name.startswith("model.layers.") and DEFAULT_BRANCH not in name for name in params)
    logits(adapter.model.train(), kind).square().mean().backward()
    for name, p in adapter.model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


@pytest.mark.parametrize("kind", KINDS)
def test_freeze_without_a_branch_freezes_them_all(kind):
    adapter = attached(kind)
    adapter.add_branch("second")
    trainable = [adapter.branch_parameters(), adapter.branch_parameters("second")]
    assert sum(p.requires_grad for p in adapter.model.parameters()) == sum(map(len, trainable))
    adapter.freeze()
    assert not any(p.requires_grad for p in adapter.model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_disabled_computes_the_bare_backbone(kind):
    adapter = attached(kind)
    with torch.no_grad():
        bare = logits(backbone(), kind)
    adapted = outputs(adapter)
    assert not torch.allclose(adapted, bare, atol=1e-4)
    with adapter.disabled():
        assert torch.equal(outputs(adapter), bare)
        if kind == "personalized":  # no bank runs, so no routing is needed
            with torch.no_grad():
                assert torch.equal(adapter.model(input_ids=batch()[0]).logits, bare)
    assert torch.equal(outputs(adapter), adapted)


@pytest.mark.parametrize("kind", KINDS)
def test_merged_gives_the_same_outputs_and_leaves_the_adapter_as_it_was(kind):
    adapter = attached(kind)
    adapted = outputs(adapter)
    with adapter.merged():
        assert torch.allclose(outputs(adapter), adapted, atol=1e-5)
    assert torch.allclose(outputs(adapter), adapted, atol=1e-6)
    with adapter.disabled():  # unmerged again: the backbone's own weights are back
        assert torch.allclose(outputs(adapter), logits(backbone(), kind), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_snapshot_is_a_detached_copy(kind):
    adapter = attached(kind)
    snapshot = adapter.snapshot()
    before = {name: value.clone() for name, value in snapshot.items()}
    assert snapshot.keys() == adapter.branch_parameters().keys()
    assert not any(value.requires_grad for value in snapshot.values())
    sgd_step(adapter)
    live = adapter.branch_parameters()
    assert any(not torch.equal(live[name], snapshot[name]) for name in snapshot)
    assert all(torch.equal(snapshot[name], before[name]) for name in snapshot)


@pytest.mark.parametrize("kind", KINDS)
def test_two_branches_are_summed_and_freeze_one_by_one(kind, tmp_path):
    adapter = attached(kind)
    single = outputs(adapter)
    adapter.add_branch("second")
    assert adapter.branches == [DEFAULT_BRANCH, "second"]
    assert adapter.config("second") == adapter.config()
    assert torch.equal(outputs(adapter), single)  # a fresh branch adds zero
    randomize_b(adapter, "second")
    assert not torch.allclose(outputs(adapter), single, atol=1e-4)

    adapter.save(tmp_path / "second", "second")
    alone = load(backbone(), tmp_path / "second")  # the second branch by itself
    randomize_b(adapter, DEFAULT_BRANCH, scale=0)
    assert torch.allclose(outputs(adapter), outputs(alone), atol=1e-6)

    randomize_b(adapter, DEFAULT_BRANCH)
    adapter.freeze(DEFAULT_BRANCH)
    logits(adapter.model.train(), kind).square().mean().backward()
    assert all(p.grad is None for p in adapter.branch_parameters().values())
    assert all(p.grad is not None for p in adapter.branch_parameters("second").values())


@pytest.mark.parametrize("kind", KINDS)
def test_removing_a_branch_leaves_the_others(kind):
    adapter = attached(kind)
    single = outputs(adapter)
    adapter.add_branch("second")
    randomize_b(adapter, "second")
    adapter.freeze(DEFAULT_BRANCH)
    adapter.remove_branch("second")
    assert adapter.branches == [DEFAULT_BRANCH]
    assert torch.equal(outputs(adapter), single)
    assert not any(p.requires_grad for p in adapter.model.parameters())  # the frozen branch stays frozen
    with pytest.raises(LifeloraError, match="last branch"):
        adapter.remove_branch(DEFAULT_BRANCH)
    with pytest.raises(LifeloraError, match="no adapter branch 'second'"):
        adapter.branch_parameters("second")
    with pytest.raises(LifeloraError, match="exists already"):
        adapter.add_branch(DEFAULT_BRANCH)
    with pytest.raises(LifeloraError, match="branch name"):
        adapter.add_branch("a.b")


@pytest.mark.parametrize("kind", KINDS)
def test_saved_branches_restore_the_weights_and_what_trains(kind, tmp_path):
    """What the continual engine does at a period's end and on resuming (`save_period`, `restore_period`)."""
    adapter = attached(kind)
    adapter.freeze(DEFAULT_BRANCH)
    adapter.add_branch("second")  # adding a branch leaves the others as they were
    assert not any(p.requires_grad for p in adapter.branch_parameters().values())
    assert all(p.requires_grad for p in adapter.branch_parameters("second").values())
    for branch in adapter.branches:
        adapter.save(tmp_path / branch, branch)
    saved = {branch: adapter.snapshot(branch) for branch in adapter.branches}
    sgd_step(adapter)
    live = adapter.branch_parameters("second")
    assert any(not torch.equal(live[name], value) for name, value in saved["second"].items())

    restored = load(backbone(), tmp_path / DEFAULT_BRANCH)
    restored.load_branch(tmp_path / "second", "second", trainable=True)
    assert restored.branches == [DEFAULT_BRANCH, "second"]
    for branch, weights in saved.items():
        params = restored.branch_parameters(branch)
        assert params.keys() == weights.keys()
        assert all(torch.equal(params[name], value) for name, value in weights.items())
        assert all(p.requires_grad == (branch == "second") for p in params.values())


@pytest.mark.parametrize("kind", KINDS)
def test_save_then_load_gives_the_same_outputs_frozen(kind, tmp_path):
    adapter = attached(kind)
    adapter.save(tmp_path / "adapter")
    assert is_adapter_dir(tmp_path / "adapter") and kind_of(tmp_path / "adapter") == kind
    assert (tmp_path / "adapter" / ADAPTER_KINDS[kind].config_file).is_file()
    loaded = load(backbone(), tmp_path / "adapter")
    assert loaded.kind == kind and loaded.branches == [DEFAULT_BRANCH]
    assert loaded.config() == adapter.config()
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert not any(m.training for m in loaded.model.modules())
    assert torch.equal(outputs(loaded), outputs(adapter))


@pytest.mark.parametrize("kind", KINDS)
def test_load_trainable_trains(kind, tmp_path):
    attached(kind).save(tmp_path / "adapter")
    loaded = load(backbone(), tmp_path / "adapter", trainable=True)
    params = loaded.branch_parameters()
    assert {id(p) for p in loaded.model.parameters() if p.requires_grad} == {id(p) for p in params.values()}
    before = loaded.snapshot()
    sgd_step(loaded)
    assert any(not torch.equal(params[name], before[name]) for name in params)


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_branch_loads_beside_a_fresh_one(kind, tmp_path):
    saved = attached(kind)
    saved.save(tmp_path / "saved")
    torch.manual_seed(2)
    adapter = attach(backbone(), config(kind), routing_dim=ROUTING_DIM)
    adapter.load_branch(tmp_path / "saved", "old")
    assert adapter.branches == [DEFAULT_BRANCH, "old"]
    assert all(p.requires_grad for p in adapter.branch_parameters().values())
    assert not any(p.requires_grad for p in adapter.branch_parameters("old").values())
    assert adapter.snapshot("old").keys() == saved.snapshot().keys()
    assert all(torch.equal(v, saved.snapshot()[k]) for k, v in adapter.snapshot("old").items())
    assert torch.allclose(outputs(adapter), outputs(saved), atol=1e-6)  # the fresh branch adds zero
    adapter.save(tmp_path / "again", "old")  # a branch saves as a plain one-branch directory
    assert torch.equal(outputs(load(backbone(), tmp_path / "again")), outputs(saved))


@pytest.mark.parametrize("kind", KINDS)
def test_unload_gives_back_the_same_module_and_layers(kind):
    base = backbone()
    modules = dict(base.named_modules())
    with torch.no_grad():
        bare = logits(base, kind)
    adapter = attach(base, config(kind), routing_dim=ROUTING_DIM)
    adapter.add_branch("second")
    randomize_b(adapter)
    assert adapter.unload() is base
    assert dict(base.named_modules()) == modules
    with torch.no_grad():
        assert torch.equal(logits(base, kind), bare)


def test_a_saved_lora_branch_is_a_plain_peft_adapter(tmp_path):
    from peft import PeftModel

    adapter = attached("lora")
    adapter.add_branch("second")
    randomize_b(adapter, "second")
    adapter.save(tmp_path / "second", "second")
    assert sorted(
        p.name for p in (tmp_path / "second").iterdir() if p.suffix in (".json", ".safetensors")
    ) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    plain = PeftModel.from_pretrained(backbone(), str(tmp_path / "second")).eval()
    randomize_b(adapter, DEFAULT_BRANCH, scale=0)
    with torch.no_grad():
        assert torch.allclose(logits(plain, "lora"), outputs(adapter), atol=1e-6)


def test_personalized_branches_may_target_other_layers():
    adapter = attached("personalized")
    single = outputs(adapter)
    adapter.add_branch("mlp", config("personalized", target_modules=["up_proj"]))
    randomize_b(adapter, "mlp")
    assert all(".mlp.up_proj." in name for name in adapter.branch_parameters("mlp"))
    assert not torch.allclose(outputs(adapter), single, atol=1e-4)
    adapter.remove_branch("mlp")
    assert type(adapter.model.base_model.model.layers[0].mlp.up_proj) is torch.nn.Linear
    assert torch.equal(outputs(adapter), single)
    adapter.add_branch("second")
    with pytest.raises(LifeloraError, match="one branch"):
        adapter.model.export_instance(batch()[1][0], "unused")


def test_registry_errors(tmp_path):
    assert adapter_class("lora") is LoraAdapter
    with pytest.raises(LifeloraError, match="unknown adapter kind 'nope'"):
        adapter_class("nope")
    with pytest.raises(LifeloraError, match="needs a lens"):
        attach(backbone(), config("personalized"))
    with pytest.raises(LifeloraError, match=f"{re.escape(str(tmp_path))}: not an adapter directory"):
        load(backbone(), tmp_path)
    assert not is_adapter_dir(tmp_path) and kind_of(tmp_path) is None
    with pytest.raises(LifeloraError, match="not a PEFT adapter directory"):
        LoraAdapter.load(backbone(), tmp_path)
    with pytest.raises(LifeloraError, match="reserves"):
        attached("lora").add_branch("lora")
    with pytest.raises(LifeloraError, match=r"adapter\.target_modules"):
        attach(backbone(), config("lora", target_modules=["nothing_here"]))
    with pytest.raises(LifeloraError, match="match no linear layer"):
        attach(backbone(), config("personalized", target_modules=["nothing_here"]), ROUTING_DIM)
