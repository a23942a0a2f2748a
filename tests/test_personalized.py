"""RecLoRA's personalized adapter on tiny random models: equivalences, gradients, save/load, export."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError
from tiny_llm import tiny_model

from lifelora.adapters import DEFAULT_BRANCH
from lifelora.adapters.personalized import (
    PersonalizedAdapter,
    PersonalizedConfig,
    PersonalizedModel,
    routing_context,
)
from lifelora.errors import LifeloraError

VOCAB, ROUTING_DIM = 64, 12


def personalized(mixing="factors", n_loras=4, seed=0, kind="llama", **changes) -> PersonalizedAdapter:
    config = PersonalizedConfig(
        n_loras=n_loras, r=2, mixing=mixing, temperature=1.0, gate_dropout=0.0, **changes
    )
    adapter = PersonalizedAdapter.attach(tiny_model(kind, VOCAB, seed=seed), config, routing_dim=ROUTING_DIM)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # non-zero B so every adapter changes the output
        for bank in adapter.model.banks().values():
            bank.lora_B.normal_(0, 0.5)
    adapter.model.eval()
    return adapter


def batch(size=3, length=7, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (size, length), generator=g), torch.randn(size, ROUTING_DIM, generator=g)


@pytest.mark.parametrize("mixing", ["factors", "products"])
def test_single_meta_lora_equals_a_peft_lora_with_the_same_weights(mixing):
    from peft import LoraConfig, get_peft_model

    model = personalized(mixing, n_loras=1).model
    peft_model = get_peft_model(
        tiny_model("llama", VOCAB, seed=0),
        LoraConfig(r=2, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    ).eval()
    with torch.no_grad():
        for name, layer in model.banks().items():
            target = peft_model.base_model.model.get_submodule(name)
            target.lora_A["default"].weight.copy_(layer.lora_A[0])
            target.lora_B["default"].weight.copy_(layer.lora_B[0])
    ids, routing = batch()
    with torch.no_grad():
        ours = model(input_ids=ids, routing=routing).logits
        theirs = peft_model(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("mixing", ["factors", "products"])
def test_mixed_batch_equals_a_loop_over_explicitly_merged_weights(mixing):
    model = personalized(mixing).model
    layer = model.personalized_layers()["model.layers.0.self_attn.q_proj"]
    bank = layer.banks[DEFAULT_BRANCH]
    x = torch.randn(5, 6, layer.base_layer.in_features)
    routing = torch.randn(5, ROUTING_DIM)
    with torch.no_grad(), routing_context(routing):
        batched = layer(x)
        weights = bank.mixing_weights(routing)
        for i in range(5):
            w = weights[i]
            if mixing == "factors":
                a = sum(w[k] * bank.lora_A[k] for k in range(len(w)))
                b = sum(w[k] * bank.lora_B[k] for k in range(len(w)))
                delta = b @ a
            else:
                delta = sum(w[k] * bank.lora_B[k] @ bank.lora_A[k] for k in range(len(w)))
            merged = layer.base_layer.weight + bank.config.scaling * delta
            expected = torch.nn.functional.linear(x[i], merged, layer.base_layer.bias)
            assert torch.allclose(batched[i], expected, atol=1e-5)


def test_mixing_weights_are_a_tempered_softmax_of_the_gate_and_uniform_without_routing():
    model = personalized().model
    layer = next(iter(model.banks().values()))
    routing = torch.randn(4, ROUTING_DIM)
    weights = layer.mixing_weights(routing)
    assert torch.allclose(weights.sum(-1), torch.ones(4))
    assert torch.allclose(weights, torch.softmax(layer.gate(routing), -1))
    hot = PersonalizedModel(
        tiny_model("llama", VOCAB), PersonalizedConfig(n_loras=4, temperature=5.0), ROUTING_DIM
    ).eval()
    hot_layer = next(iter(hot.banks().values()))
    assert torch.allclose(hot_layer.mixing_weights(routing), torch.softmax(hot_layer.gate(routing) / 5.0, -1))
    uniform = personalized(routing="uniform").model
    assert torch.equal(next(iter(uniform.banks().values())).mixing_weights(routing), torch.full((4, 4), 0.25))


def test_each_instance_is_scored_as_if_it_were_alone():
    model = personalized().model
    ids, routing = batch(4)
    with torch.no_grad():
        together = model(input_ids=ids, routing=routing).logits
        for i in range(4):
            alone = model(input_ids=ids[i : i + 1], routing=routing[i : i + 1]).logits
            assert torch.allclose(together[i], alone[0], atol=1e-5)
        assert not torch.allclose(together[0], model(input_ids=ids[:1], routing=routing[1:2]).logits[0])


def test_gradients_reach_banks_and_gates_never_the_base_model_or_the_routing_vector():
    model = personalized().model.train()
    ids, routing = batch()
    routing.requires_grad_(True)
    loss = model(input_ids=ids, routing=routing).logits.square().mean()
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or ".gate." in n for n in trainable)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert routing.grad is None  # the lens stays frozen: its vectors are detached


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    plain = personalized().model.train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing_enable()
    assert checkpointed.base_model.model.gradient_checkpointing
    ids, routing = batch()
    grads = []
    for model in (plain, checkpointed):
        loss = model(input_ids=ids, routing=routing, use_cache=False).logits.square().mean()
        loss.backward()
        grads.append(
            (loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        )
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    for name, grad in grads[0][1].items():
        assert torch.allclose(grad, grads[1][1][name], atol=1e-6), name


def test_generation_with_routing_and_with_beams():
    model = personalized().model
    ids, routing = batch(2, 5)
    greedy = model.generate(input_ids=ids, routing=routing, max_new_tokens=3, do_sample=False)
    beams = model.generate(input_ids=ids, routing=routing, max_new_tokens=3, num_beams=2, do_sample=False)
    assert greedy.shape == (2, 8) and beams.shape == (2, 8)


def test_save_and_load_reproduce_the_outputs(tmp_path):
    adapter = personalized("products")
    adapter.save(tmp_path / "adapter")
    loaded = PersonalizedAdapter.load(tiny_model("llama", VOCAB, seed=0), tmp_path / "adapter")
    model = adapter.model
    ids, routing = batch()
    with torch.no_grad():
        assert torch.equal(
            model(input_ids=ids, routing=routing).logits, loaded.model(input_ids=ids, routing=routing).logits
        )
    assert loaded.config() == adapter.config()


@pytest.mark.parametrize("mixing", ["factors", "products"])
def test_exported_instance_is_a_plain_peft_adapter_with_the_same_outputs(mixing, tmp_path):
    from peft import PeftModel

    model = personalized(mixing).model
    ids, routing = batch(1)
    model.export_instance(routing[0], tmp_path / "user")
    peft_model = PeftModel.from_pretrained(tiny_model("llama", VOCAB, seed=0), str(tmp_path / "user")).eval()
    with torch.no_grad():
        ours = model(input_ids=ids, routing=routing).logits
        theirs = peft_model(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    expected_rank = 2 if mixing == "factors" else 4 * 2
    assert peft_model.peft_config["default"].r == expected_rank


def test_loading_onto_another_base_model_is_refused(tmp_path):
    personalized().save(tmp_path / "adapter")
    with pytest.raises(LifeloraError, match="another base model"):
        PersonalizedAdapter.load(tiny_model("qwen2", VOCAB), tmp_path / "adapter")
    with pytest.raises(LifeloraError, match="another base model"):
        PersonalizedAdapter.load(tiny_model("llama", VOCAB + 1), tmp_path / "adapter")
    with pytest.raises(LifeloraError, match="not a personalized adapter"):
        PersonalizedAdapter.load(tiny_model("llama", VOCAB), tmp_path)
    (tmp_path / "adapter" / "personalized_model.safetensors").write_bytes(b"broken")
    with pytest.raises(LifeloraError, match="unreadable"):
        PersonalizedAdapter.load(tiny_model("llama", VOCAB), tmp_path / "adapter")


def test_bad_routing_and_settings_get_clear_errors():
    model = personalized().model
    ids, routing = batch(3)
    with pytest.raises(LifeloraError, match=r"shape \[batch, 12\]"):
        model(input_ids=ids, routing=routing[:, :5])
    with pytest.raises(LifeloraError, match="needs routing="):
        model(input_ids=ids)
    with pytest.raises(LifeloraError, match="3 rows for a batch of 4"):
        model(input_ids=torch.cat([ids, ids[:1]]), routing=routing)
    with pytest.raises(LifeloraError, match="routing_dim is 7"):
        PersonalizedModel(tiny_model("llama", VOCAB), PersonalizedConfig(routing_dim=7), ROUTING_DIM)
    with pytest.raises(LifeloraError, match="match no linear layer"):
        PersonalizedModel(
            tiny_model("llama", VOCAB), PersonalizedConfig(target_modules=["nope"]), ROUTING_DIM
        )
    for bad in ({"n_loras": 0}, {"n_loras": 1000}, {"temperature": 0}, {"temperature": -1}):
        with pytest.raises(ValidationError):
            PersonalizedConfig(**bad)


def per_token_routing(size=3, length=7, seed=6):
    return torch.randn(size, length, ROUTING_DIM, generator=torch.Generator().manual_seed(seed))


def test_per_token_mixing_weights_are_the_per_instance_weights_of_each_token():
    bank = next(iter(personalized("products").model.banks().values()))
    routing = per_token_routing(3, 5)
    weights = bank.mixing_weights(routing)
    assert weights.shape == (3, 5, 4)
    for t in range(5):
        assert torch.allclose(weights[:, t], bank.mixing_weights(routing[:, t]), atol=1e-6)
    uniform = next(iter(personalized("products", routing="uniform").model.banks().values()))
    assert torch.equal(uniform.mixing_weights(routing), torch.full((3, 5, 4), 0.25))


def test_per_token_routing_equals_routing_each_token_alone_at_the_layer():
    model = personalized("products").model
    layer = model.personalized_layers()["model.layers.0.self_attn.q_proj"]
    bank = layer.banks[DEFAULT_BRANCH]
    x = torch.randn(3, 5, layer.base_layer.in_features)
    routing = per_token_routing(3, 5)
    with torch.no_grad():
        with routing_context(routing):
            together, delta = layer(x), bank(x)
        for t in range(5):
            with routing_context(routing[:, t]):
                assert torch.allclose(together[:, t], layer(x)[:, t], atol=1e-5)
                assert torch.allclose(delta[:, t], bank(x)[:, t], atol=1e-5)
        with routing_context(routing[:, :1]):  # flat [B, d_in] input: one token
            assert torch.allclose(layer(x[:, 0]), together[:, 0], atol=1e-5)
        with routing_context(routing[:, 0].unsqueeze(1).expand(-1, 5, -1)):  # one vector for every token
            shared = layer(x)
        with routing_context(routing[:, 0]):
            assert torch.allclose(shared, layer(x), atol=1e-5)


def test_per_token_routing_with_one_shared_vector_equals_per_instance_routing_in_the_model():
    model = personalized("products").model
    ids, routing = batch(3, 6)
    per_token = routing.unsqueeze(1).expand(-1, 6, -1)
    with torch.no_grad():
        shared = model(input_ids=ids, routing=per_token).logits
        assert torch.allclose(shared, model(input_ids=ids, routing=routing).logits, atol=1e-5)
        changed = per_token.clone()
        changed[:, -1] = per_token_routing(3, 1)[:, 0]  # a causal LM: only the last position sees it
        last = model(input_ids=ids, routing=changed).logits
    assert torch.allclose(last[:, :-1], shared[:, :-1], atol=1e-5)
    assert not torch.allclose(last[:, -1], shared[:, -1], atol=1e-3)


def test_per_token_routing_expands_over_beams_and_checks_the_length():
    model = personalized("products").model
    layer = model.personalized_layers()["model.layers.0.self_attn.q_proj"]
    x = torch.randn(4, 5, layer.base_layer.in_features)
    routing = per_token_routing(2, 5)
    with torch.no_grad():
        with routing_context(routing):
            expanded = layer(x)
        with routing_context(routing.repeat_interleave(2, dim=0)):
            assert torch.allclose(expanded, layer(x), atol=1e-6)
        with routing_context(routing), pytest.raises(LifeloraError, match=r"has 5 tokens but .* has 6"):
            layer(torch.randn(4, 6, layer.base_layer.in_features))
    ids, _ = batch(2, 5)
    with pytest.raises(LifeloraError, match=r"has 5 tokens but .* has 1"):  # cached decoding: one token
        model.generate(input_ids=ids, routing=routing, max_new_tokens=2, do_sample=False)


def test_factors_refuse_per_token_routing():
    model = personalized("factors").model
    bank = next(iter(model.banks().values()))
    ids, _ = batch(3, 7)
    routing = per_token_routing(3, 7)
    message = "mixing: factors merges one LoRA per instance and cannot route each token"
    with pytest.raises(LifeloraError, match=message):
        model(input_ids=ids, routing=routing)
    with pytest.raises(LifeloraError, match=message):
        bank.mixing_weights(routing)
    with pytest.raises(LifeloraError, match=message):
        bank.delta(torch.randn(3, 7, bank.lora_A.shape[-1]), torch.full((3, 7, 4), 0.25))
    with pytest.raises(LifeloraError, match=r"\[batch, 12\] or \[batch, tokens, 12\]"):
        bank.mixing_weights(routing.unsqueeze(0))


def test_per_token_routing_trains_banks_and_gates():
    fresh = PersonalizedModel(
        tiny_model("llama", VOCAB), PersonalizedConfig(n_loras=4, r=2, mixing="products"), ROUTING_DIM
    ).train()
    ids, _ = batch(3, 7)
    routing = per_token_routing(3, 7)
    fresh(input_ids=ids, routing=routing).logits.square().mean().backward()
    for name, bank in fresh.banks().items():  # B starts at zero: its gradient is the first to move
        assert bank.lora_B.grad is not None and bank.lora_B.grad.abs().sum() > 0, name
    model = personalized("products").model.train()  # random B: gradients reach A and the gates too
    routing.requires_grad_(True)
    model(input_ids=ids, routing=routing).logits.square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert routing.grad is None
