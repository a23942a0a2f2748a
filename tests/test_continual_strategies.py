"""The branch-per-period strategies (`sumlora`, `sdlora`, `olora`, `inflora`) on a tiny random Llama:
past branches never train, what each one adds (magnitudes, an orthogonality term, a designed A), and
that what they save rebuilds the same model."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_llm import tiny_model

from lifelora.adapters import (
    DEFAULT_BRANCH,
    Adapter,
    LoraAdapter,
    PersonalizedConfig,
    SharedLoraConfig,
    attach,
)
from lifelora.continual.strategies.base import PeriodContext, Strategy
from lifelora.continual.strategies.cumulative import SdLora, SdLoraConfig, SumLora, SumLoraConfig, lora_layers
from lifelora.continual.strategies.inflora import InfLora, InfLoraConfig, grown
from lifelora.continual.strategies.olora import OLora, OLoraConfig, OrthogonalityHook, orthogonality
from lifelora.errors import LifeloraError
from lifelora.training import TrainHook

VOCAB, ROUTING_DIM = 64, 12


def adapter0(kind: str = "lora", seed: int = 1) -> Adapter:
    """Period 0's adapter, as if trained: B non-zero so that every branch changes the outputs."""
    torch.manual_seed(seed)
    if kind == "lora":
        config = SharedLoraConfig(r=2)
    else:
        config = PersonalizedConfig(n_loras=2, r=2, temperature=1.0, gate_dropout=0.0)
    adapter = attach(tiny_model("llama", VOCAB, seed=0), config, routing_dim=ROUTING_DIM)
    randomize_b(adapter, DEFAULT_BRANCH)
    return adapter


@torch.no_grad()
def randomize_b(adapter: Adapter, branch: str) -> None:
    for name, p in adapter.branch_parameters(branch).items():
        if "lora_B" in name:
            p.normal_(0, 0.5)


def batch(seed: int = 5) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, VOCAB, (3, 7), generator=g),
        "routing": torch.randn(3, ROUTING_DIM, generator=g),
    }


def logits(adapter: Adapter, seed: int = 5) -> torch.Tensor:
    inputs = batch(seed)
    if adapter.kind != "personalized":
        inputs.pop("routing")
    return adapter.model(**inputs).logits


@torch.no_grad()
def outputs(adapter: Adapter) -> torch.Tensor:
    adapter.model.eval()
    return logits(adapter)


def context(adapter: Adapter, period: int) -> PeriodContext:
    def forward(n: int) -> None:
        with torch.no_grad():
            for i in range(n):
                logits(adapter, seed=100 * period + i)

    def fresh() -> Adapter:
        raise AssertionError("these strategies keep their adapter")

    return PeriodContext(
        period=period, adapter=adapter, seed=0, fresh=fresh, forward=forward, log=lambda s: None
    )


def train_step(adapter: Adapter, hooks: list[TrainHook]) -> None:
    """One AdamW step over the model's trainable parameters, as the training loop builds it."""
    adapter.model.train()
    optimizer = torch.optim.AdamW([p for p in adapter.model.parameters() if p.requires_grad], lr=0.05)
    loss = logits(adapter).square().mean()
    for hook in hooks:
        term = hook.loss_term(None)
        if term is not None:
            loss = loss + term
    loss.backward()
    for hook in hooks:
        hook.after_backward(None)
    optimizer.step()
    optimizer.zero_grad()


def run_period(strategy: Strategy, adapter: Adapter, period: int) -> None:
    ctx = context(adapter, period)
    assert strategy.begin_period(ctx) is adapter
    train_step(adapter, strategy.hooks(ctx))
    strategy.end_period(ctx)


def trainable_ids(adapter: Adapter) -> set[int]:
    return {id(p) for p in adapter.model.parameters() if p.requires_grad}


STRATEGIES = {
    "sumlora": lambda: SumLora(SumLoraConfig()),
    "sdlora": lambda: SdLora(SdLoraConfig()),
    "olora": lambda: OLora(OLoraConfig(weight=1.0)),
    "inflora": lambda: InfLora(InfLoraConfig()),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_past_branches_never_train(name):
    adapter, strategy = adapter0(), STRATEGIES[name]()
    strategy.end_period(context(adapter, 0))
    for period in (1, 2):
        past = [p for b in adapter.branches for p in adapter.branch_parameters(b).values()]
        before = [p.detach().clone() for p in past]
        ctx = context(adapter, period)
        strategy.begin_period(ctx)
        new = adapter.branches[-1]
        assert new == f"period-{period}" and len(adapter.branches) == period + 1
        assert not any(p.requires_grad for p in past)
        live = adapter.branch_parameters(new)
        start = {k: p.detach().clone() for k, p in live.items()}
        train_step(adapter, strategy.hooks(ctx))
        for p, old in zip(past, before, strict=True):
            assert p.grad is None and torch.equal(p, old)
        assert any(not torch.equal(p, start[k]) for k, p in live.items())  # the new branch learned
        strategy.end_period(ctx)
    # after end_period the branches' parameters are plain again (what the engine saves)
    assert all("parametriz" not in k for b in adapter.branches for k in adapter.branch_parameters(b))


@pytest.mark.parametrize("name", ["sumlora", "olora"])
def test_past_branches_never_train_personalized(name):
    adapter, strategy = adapter0("personalized"), STRATEGIES[name]()
    past = list(adapter.branch_parameters(DEFAULT_BRANCH).values())
    before = [p.detach().clone() for p in past]
    strategy.begin_period(context(adapter, 1))
    assert trainable_ids(adapter) == {id(p) for p in adapter.branch_parameters("period-1").values()}
    train_step(adapter, strategy.hooks(context(adapter, 1)))
    assert all(p.grad is None and torch.equal(p, old) for p, old in zip(past, before, strict=True))


@pytest.mark.parametrize("keep, kept", [("latest", ["period-1", "period-2"]), ("all", None)])
def test_sumlora_keep(keep, kept):
    adapter, strategy = adapter0(), SumLora(SumLoraConfig(keep=keep))
    run_period(strategy, adapter, 1)
    strategy.begin_period(context(adapter, 2))
    assert adapter.branches == (kept or [DEFAULT_BRANCH, "period-1", "period-2"])


def test_keep_latest_keeps_the_branch_with_token_rows():
    torch.manual_seed(1)
    adapter = attach(tiny_model("llama", VOCAB), SharedLoraConfig(r=2, trainable_token_indices=[3, 4]))
    strategy = SumLora(SumLoraConfig(keep="latest"))
    run_period(strategy, adapter, 1)
    strategy.begin_period(context(adapter, 2))
    assert adapter.branches == [DEFAULT_BRANCH, "period-1", "period-2"]
    assert adapter.config("period-2").trainable_token_indices is None
    assert trainable_ids(adapter) == {id(p) for p in adapter.branch_parameters("period-2").values()}


@pytest.mark.parametrize("cls, config", [(SumLora, SumLoraConfig), (SdLora, SdLoraConfig)])
def test_inherit_copies_the_newest_branch(cls, config):
    adapter, strategy = adapter0(), cls(config(inherit=True))
    old = {k: p.detach().clone() for k, p in adapter.branch_parameters(DEFAULT_BRANCH).items()}
    strategy.begin_period(context(adapter, 1))
    new = adapter.branch_parameters("period-1")
    assert new.keys() == old.keys() and all(torch.equal(p, old[k]) for k, p in new.items())
    with torch.no_grad():  # the weights the forward reads (sdlora: B through its magnitude, m = ‖BA‖)
        for layer in lora_layers(adapter, DEFAULT_BRANCH).values():
            for factor in (layer.lora_A, layer.lora_B):
                assert torch.equal(factor["period-1"].weight, factor[DEFAULT_BRANCH].weight)
    assert strategy.lr_scale(1, 0.1) == 0.1 and cls(config()).lr_scale(1, 0.1) == 1.0


def magnitudes(adapter: Adapter) -> list[torch.nn.Parameter]:
    return [p for n, p in adapter.model.named_parameters() if n.endswith(".magnitude")]


def test_sdlora_starts_from_the_same_model_and_learns_magnitudes():
    adapter, strategy = adapter0(), SdLora(SdLoraConfig())
    strategy.end_period(context(adapter, 0))
    before = outputs(adapter)
    strategy.begin_period(context(adapter, 1))
    assert torch.equal(outputs(adapter), before)  # m = ‖BA‖ exactly, new B = 0
    mags = magnitudes(adapter)
    assert len(mags) == 4  # q_proj and v_proj of 2 layers, one past branch
    new = adapter.branch_parameters("period-1").values()
    assert trainable_ids(adapter) == {id(p) for p in new} | {id(m) for m in mags}
    adapter.model.train()
    logits(adapter).square().mean().backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in mags)


def test_sdlora_merge_reads_the_magnitudes():
    adapter, strategy = adapter0(), SdLora(SdLoraConfig())
    strategy.begin_period(context(adapter, 1))
    randomize_b(adapter, "period-1")
    with torch.no_grad():
        for m in magnitudes(adapter):
            m.mul_(1.7)
    unmerged = outputs(adapter)
    with adapter.merged():
        merged = outputs(adapter)
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert torch.allclose(outputs(adapter), unmerged, atol=1e-6)  # unmerged again


def test_sdlora_resumes_from_saved_branches_and_state(tmp_path):
    adapter, strategy = adapter0(), SdLora(SdLoraConfig())
    strategy.end_period(context(adapter, 0))
    for period in (1, 2):
        ctx = context(adapter, period)
        strategy.begin_period(ctx)
        randomize_b(adapter, adapter.branches[-1])
        with torch.no_grad():
            for i, m in enumerate(magnitudes(adapter)):
                m.mul_(0.5 + 0.25 * i)
        during = outputs(adapter)
        strategy.end_period(ctx)
        assert torch.allclose(outputs(adapter), during, atol=1e-6)  # folding keeps the model
    # what the engine does: every branch saved, the strategy state as safetensors
    flags = {}
    for branch in adapter.branches:
        adapter.save(tmp_path / branch, branch)
        flags[branch] = any(p.requires_grad for p in adapter.branch_parameters(branch).values())
    state = strategy.state_dict()
    assert set(state) == {
        f"{b}/model.layers.{i}.self_attn.{m}"
        for b in (DEFAULT_BRANCH, "period-1")
        for i in (0, 1)
        for m in ("q_proj", "v_proj")
    }
    save_file(state, tmp_path / "state.safetensors")
    first, *rest = adapter.branches
    rebuilt = LoraAdapter.load(
        tiny_model("llama", VOCAB), tmp_path / first, trainable=flags[first], branch=first
    )
    for branch in rest:
        rebuilt.load_branch(tmp_path / branch, branch, trainable=flags[branch])
    resumed = SdLora(SdLoraConfig())
    resumed.load_state_dict(load_file(tmp_path / "state.safetensors"), rebuilt)
    assert torch.allclose(outputs(rebuilt), outputs(adapter), atol=1e-6)
    assert resumed.state_dict().keys() == state.keys()
    for strat, model in ((strategy, adapter), (resumed, rebuilt)):
        strat.begin_period(context(model, 3))
    assert torch.allclose(outputs(rebuilt), outputs(adapter), atol=1e-6)
    assert len(magnitudes(rebuilt)) == len(magnitudes(adapter)) == 12


@pytest.mark.parametrize("cls", [SdLora, InfLora])
def test_lora_only_strategies_refuse_other_kinds(cls):
    strategy = cls(cls.config_class())
    with pytest.raises(LifeloraError, match="kind 'lora' only"):
        strategy.begin_period(context(adapter0("personalized"), 1))


def test_orthogonality_term_by_hand():
    g = torch.Generator().manual_seed(0)
    new = {"m1": torch.randn(2, 5, generator=g), "m2": torch.randn(3, 4, generator=g)}
    past_a, past_b = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    past = {"m1": torch.cat([past_a, past_b]), "m2": torch.randn(1, 4, generator=g)}
    expected = 0.0
    for m, pasts in (("m1", [past_a, past_b]), ("m2", [past["m2"]])):
        for p in pasts:
            for i in range(new[m].shape[0]):
                for j in range(p.shape[0]):
                    expected += float(sum(new[m][i, k] * p[j, k] for k in range(p.shape[1]))) ** 2
    assert orthogonality(new, past).item() == pytest.approx(expected, rel=1e-5)
    hook = OrthogonalityHook(new, past, weight=0.5)
    assert hook.loss_term(None).item() == pytest.approx(0.5 * expected, rel=1e-5)
    eye = torch.eye(4)
    assert orthogonality({"m": eye[:2]}, {"m": eye[2:]}).item() == 0.0


def test_olora_hook_on_the_adapter():
    adapter, strategy = adapter0(), OLora(OLoraConfig(weight=0.5))
    ctx = context(adapter, 1)
    strategy.begin_period(ctx)
    (hook,) = strategy.hooks(ctx)
    expected = sum(
        (adapter.branch_parameters("period-1")[k] @ p.T).pow(2).sum()
        for k, p in adapter.branch_parameters(DEFAULT_BRANCH).items()
        if "lora_A" in k
    )
    assert hook.loss_term(None).item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
    with torch.no_grad():  # new rows orthogonal to the past ones: no term
        for k, p in adapter.branch_parameters("period-1").items():
            if "lora_A" in k:
                past = adapter.branch_parameters(DEFAULT_BRANCH)[k]
                q, _ = torch.linalg.qr(past.T, mode="complete")
                p.copy_(q[:, past.shape[0] : past.shape[0] + p.shape[0]].T)
    assert hook.loss_term(None).item() == pytest.approx(0.0, abs=1e-10)
    train_step(adapter, [hook])
    assert hook.step_metrics(None)["orthogonality"] >= 0


def test_inflora_designs_a_orthogonal_to_the_stored_subspace():
    adapter, strategy = adapter0(), InfLora(InfLoraConfig(threshold=0.9, batches=2))
    strategy.end_period(context(adapter, 0))
    assert set(strategy.subspace) == {
        f"model.layers.{i}.self_attn.{m}" for i in (0, 1) for m in ("q_proj", "v_proj")
    }
    for period in (1, 2):
        stored = {k: m.clone() for k, m in strategy.subspace.items()}
        ctx = context(adapter, period)
        strategy.begin_period(ctx)
        new = adapter.branches[-1]
        params = adapter.branch_parameters(new)
        assert trainable_ids(adapter) == {id(p) for k, p in params.items() if "lora_B" in k}
        for key, p in params.items():
            if "lora_A" in key:
                m = stored[key.split(".lora_A")[0]]
                assert 0 < m.shape[1] < 32 - 2
                assert (p @ m).abs().max() < 1e-5
                assert torch.allclose(p @ p.T, torch.eye(2), atol=1e-5)  # orthonormal rows
            else:
                assert not p.any()  # B starts at zero
        a = {k: p.detach().clone() for k, p in params.items() if "lora_A" in k}
        train_step(adapter, strategy.hooks(ctx))
        assert all(torch.equal(params[k], v) for k, v in a.items())
        strategy.end_period(ctx)
        for key, m in strategy.subspace.items():
            assert m.shape[1] >= stored[key].shape[1]
            assert torch.allclose(m[:, : stored[key].shape[1]], stored[key])
            assert torch.allclose(m.T @ m, torch.eye(m.shape[1]), atol=1e-4)
    state = strategy.state_dict()
    resumed = InfLora(InfLoraConfig())
    resumed.load_state_dict(state, adapter)
    assert all(torch.equal(resumed.subspace[k], v) for k, v in strategy.subspace.items())


def test_subspace_growth_keeps_the_threshold_of_energy():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.1])
    h = torch.randn(6, 200, generator=g) * scales[:, None]  # energy mostly in the first coordinates
    covariance = h @ h.T
    energy = lambda m: float(torch.trace(m.T @ covariance @ m) / torch.trace(covariance))  # noqa: E731
    m = grown(covariance, None, 0.9)
    assert energy(m) >= 0.9 and energy(m[:, :-1]) < 0.9
    assert grown(covariance, m, 0.9).shape == m.shape  # already kept: nothing added
    more = grown(covariance, m, 0.999)
    assert more.shape[1] > m.shape[1] and energy(more) >= 0.999 and energy(more[:, :-1]) < 0.999
