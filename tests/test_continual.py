"""The continual engine on tiny random models: per-period samples, the proximal terms against hand
computations and PESO's closed form, warm start, resume-after-a-period equality, the report and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.stats
import torch
import yaml
from test_next_item import config as next_item_config
from tiny_llm import save_tiny

from lifelora.continual.config import ContinualNextItemConfig
from lifelora.continual.engine import FIRST, restore_period, run_strategy, train_first_period
from lifelora.continual.runner import run_continual
from lifelora.continual.strategies import FinetuneConfig, make_strategy
from lifelora.continual.strategies.proximal import ProximalHook, module_of
from lifelora.continual.stream import Stream
from lifelora.data.periods import PeriodSpec, interaction_periods
from lifelora.data.sequential import block_leave_one_out, returning, sequences_until
from lifelora.errors import LifeloraError
from lifelora.io import read_json
from lifelora.tasks.next_item.task import NextItemTask
from lifelora.training import TrainContext, TrainSettings


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("llama"), "llama")


def continual_config(model_dir, strategies=None, **continual) -> ContinualNextItemConfig:
    """The next-item tests' tiny setting (`test_next_item.config`) with 3 periods and small subsets."""
    tree = next_item_config(model_dir, subset={"train": 16, "eval": 8}, eval={"batch_size": 8}).model_dump(
        mode="json"
    )
    tree |= {
        "continual": {
            "periods": {"fractions": [0.5, 0.25, 0.25]},
            "strategies": strategies
            or [
                {"name": "pretrain"},
                {"name": "finetune"},
                {"name": "peso", "proximal": "l2", "weight": 1.0},
            ],
            "valid_samples": 8,
            **continual,
        },
    }
    return ContinualNextItemConfig.model_validate(tree)


@pytest.fixture(scope="module")
def late_data(tmp_path_factory):
    """Four users arrive in the last period (a growing lens vocabulary has someone new to learn)."""
    from synthetic import synthetic_prepared

    directory = tmp_path_factory.mktemp("late") / "ml-synthetic"
    return synthetic_prepared(directory, name="ml-synthetic", late_users=4)


@pytest.fixture
def stream(data, llama_dir, home):
    cfg = continual_config(llama_dir)
    task = NextItemTask(data, str(llama_dir), cfg.semantic_ids, log=lambda _m: None)
    return Stream(task, cfg, log=lambda _m: None)


def test_block_leave_one_out_matches_a_loop_over_users(data):
    periods = interaction_periods(data, PeriodSpec(fractions=[0.5, 0.25, 0.25]))
    offset, length = data.users["seq_offset"].to_numpy(), data.users["seq_len"].to_numpy()
    for period in range(3):
        expected = {"train": [], "valid": [], "test": []}
        for user in range(len(length)):
            block = [i for i in range(length[user]) if periods[offset[user] + i] == period]
            if block and block[-1] >= 1:
                expected["test"].append((user, block[-1]))
            if len(block) >= 2 and block[-2] >= 1:
                expected["valid"].append((user, block[-2]))
            expected["train"] += [(user, i) for i in block[:-2] if i >= 1]
        for split, pairs in expected.items():
            got = block_leave_one_out(data, periods, period, split)
            assert list(zip(got.user_idx.tolist(), got.position.tolist(), strict=True)) == pairs
        ends = sequences_until(data, periods, period)
        for user, position in zip(ends.user_idx, ends.position, strict=True):
            upto = sum(periods[offset[user] + i] <= period for i in range(length[user]))
            held_out = min(2, sum(periods[offset[user] + i] == period for i in range(length[user])))
            assert position == upto - held_out
        test = block_leave_one_out(data, periods, period, "test")
        first = periods[offset[test.user_idx]]
        assert (returning(data, periods, test) == (first < period)).all()
        assert period > 0 or not returning(data, periods, test).any()


def test_l2_proximal_gradient_is_lambda_times_the_distance_to_the_anchor():
    torch.manual_seed(0)
    live = {"m.q_proj.lora_A.weight": torch.nn.Parameter(torch.randn(4, 6))}
    anchor = {"m.q_proj.lora_A.weight": torch.randn(4, 6)}
    hook = ProximalHook(live, anchor, "l2", weight=0.7)
    hook.loss_term(TrainContext(None, TrainSettings()))
    (grad,) = hook._grad
    torch.testing.assert_close(
        grad, 0.7 * (live["m.q_proj.lora_A.weight"] - anchor["m.q_proj.lora_A.weight"])
    )
    assert float(penalty(anchor, anchor, "l2", weight=0.7)) == 0.0


def penalty(live: dict, anchor: dict, form: str, weight: float) -> torch.Tensor:
    """What the proximal hook adds to a micro-batch's loss with the weights at `live`."""
    params = {name: torch.nn.Parameter(value.clone()) for name, value in live.items()}
    return ProximalHook(params, anchor, form, weight).loss_term(TrainContext(None, TrainSettings())).detach()


def test_softmax_kl_is_zero_at_the_anchor_and_matches_a_hand_computation():
    a = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    b = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    live = {"x.q_proj.lora_A.weight": a, "x.q_proj.lora_B.weight": b, "x.v_proj.lora_A.weight": a}
    anchor = {name: torch.zeros_like(t) for name, t in live.items()}
    assert float(penalty(anchor, anchor, "softmax_kl", weight=0.3)) == 0.0
    uniform = np.full(4, 0.25)

    def kl(values):
        p = np.exp(values) / np.exp(values).sum()
        return float((p * np.log(p / uniform)).sum())

    expected = (kl(a.numpy().ravel()) * 2 + kl(b.numpy().ravel())) / 2  # 3 factors over M = 2 modules
    assert float(penalty(live, anchor, "softmax_kl", weight=0.3)) == pytest.approx(0.3 * expected, rel=1e-6)
    assert module_of("model.layers.0.self_attn.q_proj.lora_B.weight") == "model.layers.0.self_attn.q_proj"


def test_l2_proximal_solution_follows_pesos_closed_form_per_eigendirection():
    """min ½‖Xv − y‖² + (λ/2)‖v − v_prev‖²: along each eigendirection q_k of XᵀX (eigenvalue σ_k²) the
    solution is σ²/(σ²+λ)·v* + λ/(σ²+λ)·v_prev, v* the least-squares optimum."""
    torch.manual_seed(0)
    x = torch.randn(40, 5, dtype=torch.float64) * torch.tensor(
        [3.0, 1.0, 0.5, 0.2, 0.05], dtype=torch.float64
    )
    y = torch.randn(40, dtype=torch.float64)
    previous = torch.randn(5, dtype=torch.float64)
    lam = 0.8
    v = torch.nn.Parameter(previous.clone())
    hook = ProximalHook({"w.lora_A": v}, {"w.lora_A": previous}, "l2", lam)
    optimizer = torch.optim.LBFGS([v], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * ((x @ v - y) ** 2).sum() + hook.loss_term(TrainContext(None, TrainSettings()))
        loss.backward()
        return loss

    optimizer.step(closure)
    sigma2, q = torch.linalg.eigh(x.T @ x)
    optimum = torch.linalg.lstsq(x, y).solution
    along = q.T @ v.detach()
    expected = sigma2 / (sigma2 + lam) * (q.T @ optimum) + lam / (sigma2 + lam) * (q.T @ previous)
    torch.testing.assert_close(along, expected, atol=1e-6, rtol=1e-6)


def test_peso_warm_starts_from_the_last_period_and_logs_the_regularizer(stream, tmp_path):
    train_first_period(stream, 3, tmp_path)
    first = restore_period(tmp_path / FIRST, stream.task.backbone.model, None)
    start = {k: v.clone() for k, v in first.branch_parameters().items()}
    first.unload()
    strategy = make_strategy(stream.cfg.continual.strategies[2])
    run_strategy(stream, strategy, 3, tmp_path, log=lambda _m: None)
    # the anchor of period 1 was period 0's adapter, exactly: warm start
    curve = read_json(tmp_path / "peso" / "period-1" / "curve.json")
    assert curve[0]["proximal"] == pytest.approx(0.0, abs=1e-12)
    assert {"proximal_grad_norm", "task_grad_norm", "proximal_grad_ratio"} <= set(curve[-1])
    assert curve[-1]["proximal_grad_norm"] > 0
    anchor_after_1 = restore_period(tmp_path / "peso" / "period-1", stream.task.backbone.model, strategy)
    moved = any(not torch.equal(start[k], v) for k, v in anchor_after_1.branch_parameters().items())
    anchor_after_1.unload()
    assert moved


RESUMED = [
    {"name": "peso"},
    {"name": "replay", "buffer": 8},
    {"name": "sumlora", "inherit": True},
    {"name": "sdlora"},
    {"name": "olora"},
    {"name": "inflora", "batches": 2},
]


@pytest.mark.parametrize("strategy", RESUMED, ids=lambda s: s["name"])
def test_a_killed_run_resumes_after_its_last_period_and_reaches_the_same_result(stream, tmp_path, strategy):
    from pydantic import TypeAdapter

    from lifelora.continual.strategies import AnyStrategyConfig

    config = TypeAdapter(AnyStrategyConfig).validate_python(strategy)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    for root in (whole, resumed):
        train_first_period(stream, 5, root)
        run_strategy(stream, make_strategy(config), 5, root, log=lambda _m: None)
    name = config.title
    (resumed / name / "period-2" / "done.json").unlink()  # killed during period 2
    run_strategy(stream, make_strategy(config), 5, resumed, log=lambda _m: None)
    assert_same_adapter(stream, whole / name / "period-2", resumed / name / "period-2")
    block = read_json(whole / name / "period-2" / "done.json")["model"]
    path = f"evals/{block}/block-2.json"
    assert read_json(whole / path)["ndcg@10"] == read_json(resumed / path)["ndcg@10"]


def assert_same_adapter(stream, a: Path, b: Path) -> None:
    """The adapters saved in two period directories are equal, branch by branch, bit for bit."""
    states = []
    for directory in (a, b):
        adapter = restore_period(directory, stream.task.backbone.model, None)
        states.append(
            {f"{b}/{k}": v.clone() for b in adapter.branches for k, v in adapter.branch_parameters(b).items()}
        )
        adapter.unload()
    assert states[0].keys() == states[1].keys()
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=0, atol=0)


def test_a_run_copied_without_its_adapters_trains_again_only_what_it_must(stream, tmp_path):
    """Committed results carry no adapters: on a fresh clone a finished strategy needs nothing, an
    unfinished one trains period 0 and its own periods again (seeded) to the same weights."""
    import shutil

    from pydantic import TypeAdapter

    from lifelora.continual.strategies import AnyStrategyConfig

    finished, unfinished = (
        TypeAdapter(AnyStrategyConfig).validate_python({"name": name}) for name in ("finetune", "sdlora")
    )
    whole, copied = tmp_path / "whole", tmp_path / "copied"
    for root in (whole, copied):
        train_first_period(stream, 5, root)
        for config in (finished, unfinished):
            run_strategy(stream, make_strategy(config), 5, root, log=lambda _m: None)
    for adapter in list(copied.rglob("adapter")):
        shutil.rmtree(adapter)
    for state in copied.rglob("strategy.safetensors"):
        state.unlink()
    (copied / "sdlora" / "period-2" / "done.json").unlink()
    logs = []
    train_first_period(stream, 5, copied, log=logs.append)
    run_strategy(stream, make_strategy(finished), 5, copied, log=logs.append)
    assert not (copied / FIRST / "adapter").exists() and not logs  # nothing needed the adapters
    from lifelora.continual.report import _storage

    n = stream.cfg.continual.periods.n_periods
    assert _storage(whole, "finetune", n)["adapter_mb"] > 0
    assert math.isnan(_storage(copied, "finetune", n)["adapter_mb"])  # weights not here: unknown, not 0 MB
    run_strategy(stream, make_strategy(unfinished), 5, copied, log=logs.append)
    assert any("not on disk" in line for line in logs)
    assert_same_adapter(stream, whole / "sdlora" / "period-2", copied / "sdlora" / "period-2")
    assert (copied / "sdlora" / "period-1" / "strategy.safetensors").is_file()


def test_a_period_first_trained_on_another_kind_of_machine_is_not_trained_again_silently(stream, tmp_path):
    """Seeded retraining repeats weights only on the same kind of machine: a missing adapter recorded
    elsewhere is refused in one line before any work, or retrained and marked when accepted."""
    import shutil

    from lifelora.io import write_json
    from lifelora.run import machine_kind

    finetune = make_strategy(FinetuneConfig())
    train_first_period(stream, 5, tmp_path)
    run_strategy(stream, finetune, 5, tmp_path, log=lambda _m: None)
    here = machine_kind(stream.cfg.train.precision)
    assert read_json(tmp_path / FIRST / "done.json")["machine"] == here
    assert read_json(tmp_path / "finetune" / "period-1" / "done.json")["machine"] == here
    for adapter in list(tmp_path.rglob("adapter")):
        shutil.rmtree(adapter)
    (tmp_path / "finetune" / "period-2" / "done.json").unlink()
    elsewhere = {**here, "cpu": "Another CPU", "cpu_flags": ["avx2"]}
    for directory in (tmp_path / FIRST, tmp_path / "finetune" / "period-1"):
        write_json(directory / "done.json", {**read_json(directory / "done.json"), "machine": elsewhere})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.json")}
    with pytest.raises(
        LifeloraError, match=r"finetune/period-1: trained on Another CPU \[avx2\].*this machine is"
    ) as raised:
        run_strategy(stream, finetune, 5, tmp_path, log=lambda _m: None)
    assert "\n" not in str(raised.value) and "continual.retrain_elsewhere=true" in str(raised.value)
    with pytest.raises(LifeloraError, match=r"period-0: trained on Another CPU"):
        train_first_period(stream, 5, tmp_path, need_adapter=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.json")} == before and not list(
        tmp_path.rglob("adapter")
    )

    settings = stream.cfg.continual.model_copy(update={"retrain_elsewhere": True})
    stream.cfg = stream.cfg.model_copy(update={"continual": settings})
    logs = []
    run_strategy(stream, finetune, 5, tmp_path, log=logs.append)
    for directory in (tmp_path / FIRST, tmp_path / "finetune" / "period-1"):
        done = read_json(directory / "done.json")
        assert done["machine"] == here and done["first_trained_on"] == elsewhere
    assert "first_trained_on" not in read_json(tmp_path / "finetune" / "period-2" / "done.json")


def test_run_writes_the_table_and_plot_and_pretrain_never_trains_after_period_0(stream, tmp_path):
    summary = run_continual(stream.cfg, tmp_path, log=lambda _m: None, stream=stream)
    assert set(summary["strategies"]) == {"pretrain", "finetune", "peso"}
    assert (tmp_path / "results.png").stat().st_size > 0 and (tmp_path / "results.md").is_file()
    pretrain = read_json(tmp_path / "seed-42" / "pretrain" / "period-2" / "done.json")
    assert pretrain["model"] == FIRST and pretrain["train"] is None
    finetune = summary["strategies"]["finetune"]["seeds"]["42"]
    matrix = np.array(finetune["matrix"], dtype=float)
    assert not np.isnan(np.diag(matrix)).any() and np.isnan(matrix[2, 0])  # matrix: next
    assert summary["strategies"]["peso"]["mean"]["adapters"] == 1


ALL_STRATEGIES = [
    {"name": "pretrain"},
    {"name": "finetune"},
    {"name": "peso"},
    {"name": "retrain"},
    {"name": "replay", "buffer": 8},
    {"name": "sumlora", "keep": "latest", "inherit": True},
    {"name": "sdlora"},
    {"name": "olora"},
    {"name": "inflora", "batches": 2},
]


def test_every_strategy_runs_through_the_engine_with_the_full_matrix(data, llama_dir, home, tmp_path):
    cfg = continual_config(llama_dir, ALL_STRATEGIES, matrix="full")
    task = NextItemTask(data, str(llama_dir), cfg.semantic_ids, log=lambda _m: None)
    summary = run_continual(cfg, tmp_path, log=lambda _m: None, stream=Stream(task, cfg, lambda _m: None))
    for title, result in summary["strategies"].items():
        mean = result["mean"]
        assert mean["periods_done"] == 3, title
        assert not np.isnan(mean["bwt"]) and not np.isnan(mean["fwt"]) and not np.isnan(mean["forgetting"]), (
            title
        )
    adapters = {title: s["mean"]["adapters"] for title, s in summary["strategies"].items()}
    assert adapters["peso"] == adapters["finetune"] == adapters["retrain"] == 1
    assert adapters["sdlora"] == adapters["olora"] == 3  # period 0's branch + one per later period
    assert task.backbone.model.__class__.__name__ == "LlamaForCausalLM"  # every adapter unloaded


@pytest.mark.parametrize("lens_mode", ["frozen", "finetune", "retrain"])
def test_a_personalized_bank_evolves_routed_by_a_sasrec_lens(data, llama_dir, home, tmp_path, lens_mode):
    from lifelora.lens.sasrec import SASRecLens
    from lifelora.lens.sasrec.config import SASRecConfig

    lens_config = {"model": {"hidden": 8, "max_len": 8}, "train": {"epochs": 2, "compile": False}}
    lens = SASRecLens.create(SASRecConfig.model_validate(lens_config), data)
    lens.save(tmp_path / "lens")
    (tmp_path / "lens.yaml").write_text(yaml.safe_dump(lens_config))
    tree = continual_config(llama_dir).model_dump(mode="json")
    tree["adapter"] = {"kind": "personalized", "r": 2, "n_loras": 3, "target_modules": ["q_proj"]}
    # an evolving lens needs only the named lens's settings: a config will do, no trained lens run
    tree["lens"] = str(tmp_path / ("lens" if lens_mode == "frozen" else "lens.yaml"))
    tree["continual"]["lens"] = lens_mode
    cfg = ContinualNextItemConfig.model_validate(tree)
    cfg = cfg.model_copy(
        update={"continual": cfg.continual.model_copy(update={"strategies": cfg.continual.strategies[1:]})}
    )
    task = NextItemTask(data, str(llama_dir), cfg.semantic_ids, log=lambda _m: None)
    if lens_mode == "frozen":  # a frozen lens routes as it is: an untrained one from a config would not do
        configured = cfg.model_copy(update={"lens": tmp_path / "lens.yaml"})
        with pytest.raises(LifeloraError, match=r"lens: .*lens\.yaml is a lens config.*continual\.lens"):
            Stream(task, configured, lambda _m: None).use_period(0)
    summary = run_continual(
        cfg, tmp_path / "run", log=lambda _m: None, stream=Stream(task, cfg, lambda _m: None)
    )
    assert summary["strategies"]["peso"]["mean"]["periods_done"] == 3
    curve = read_json(tmp_path / "run" / "seed-42" / "peso" / "period-1" / "curve.json")
    assert curve[-1]["proximal_grad_norm"] > 0
    lenses = sorted(p.parent.name for p in (tmp_path / "run" / "lenses").glob("period-*/done.json"))
    assert lenses == ([] if lens_mode == "frozen" else ["period-0", "period-1", "period-2"])


@pytest.mark.parametrize(
    ("kind", "lens_mode"),
    [
        ("lora", "frozen"),
        ("personalized", "frozen"),
        ("personalized", "finetune"),
        ("personalized", "retrain"),
    ],
)
def test_click_through_runs_the_same_strategies(late_data, home, tmp_path, tmp_path_factory, kind, lens_mode):
    from test_lens import small_config

    from lifelora.continual.config import ContinualCTRConfig
    from lifelora.lens import DINLens
    from lifelora.tasks.ctr.task import CTRTask

    model_dir = save_tiny(tmp_path_factory.mktemp("llama-ctr"), "llama")
    adapter = {"kind": kind, "r": 2, "target_modules": ["q_proj"]}
    if kind == "personalized":
        DINLens.create(small_config(**{"train.max_epochs": 2}), late_data).save(tmp_path / "lens")
        adapter |= {"n_loras": 3}
    strategies = [{"name": "finetune"}, {"name": "peso", "proximal": "l2", "weight": 1.0}]
    cfg = ContinualCTRConfig.model_validate(
        {
            "adapter": adapter,
            "lens": str(tmp_path / "lens") if kind == "personalized" else None,
            "dataset": "ml-synthetic",
            "model": str(model_dir),
            "prompt": {"history": 5, "pca_dim": 16},
            "subset": {"train": 16, "eval": 40, "seed": 1},
            "train": {"batch_size": 8, "grad_accum": 1, "lr": 5e-3, "precision": "fp32"},
            "continual": {
                "periods": {"fractions": [0.5, 0.25, 0.25]},
                "strategies": strategies + ([{"name": "pretrain"}] if lens_mode != "frozen" else []),
                "valid_samples": 8,
                "lens": lens_mode,
            },
        }
    )
    stream = Stream(CTRTask(late_data, str(model_dir), log=lambda _m: None), cfg, lambda _m: None)
    statistics = stream.statistics()
    assert statistics["train_samples"].sum() > statistics["test_samples"].sum() > 0
    summary = run_continual(cfg, tmp_path / "run", log=lambda _m: None, stream=stream)
    assert 0.0 <= summary["strategies"]["peso"]["mean"]["AUC"] <= 1.0
    if kind == "personalized":  # rows of several splits, each read through its own split
        lens, task = stream.lens, stream.task
        test, valid = task.data.split("test"), task.data.split("valid")
        mixed = pl.concat([test[5:9], valid[2:4]])
        by_split = [
            lens.predict(lens.encode(task.data, split, rows=rows), hidden=True)[1]
            for split, rows in (("test", np.arange(5, 9)), ("valid", np.arange(2, 4)))
        ]
        torch.testing.assert_close(lens.routing(task.data, mixed), torch.cat(by_split))
    if lens_mode == "frozen":
        assert not (tmp_path / "run" / "lenses").exists()
        return
    lenses = [read_json(tmp_path / "run" / "lenses" / f"period-{t}" / "done.json") for t in range(3)]
    trained_on = [lens["train_samples"] for lens in lenses]
    period_train = [stream.targets(t, "train").height for t in range(3)]
    if lens_mode == "retrain":  # everything so far
        assert trained_on == list(np.cumsum(period_train))
    else:  # the period's own samples, from the last period's lens
        assert trained_on == period_train
    users_known = [
        len(DINLens.load(tmp_path / "run" / "lenses" / f"period-{t}").encoder.vocabularies["user.user"])
        for t in range(3)
    ]
    assert users_known == sorted(users_known) and users_known[0] < users_known[-1]
    evals = tmp_path / "run" / "seed-42" / "evals"
    # pretrain's one adapter is evaluated anew under each period's lens: another recommender each time
    assert sorted(p.parent.name for p in (evals / "period-0").glob("lens-*/block-*.json")) == [
        "lens-0", "lens-0", "lens-1", "lens-1", "lens-2"
    ]  # fmt: skip


def test_cli_runs_resumes_reports_and_rejects_bad_input(run_cli, data, llama_dir, home, tmp_path):
    tree = continual_config(llama_dir).model_dump(mode="json")
    tree["data_dir"] = str(data.directory)
    path = tmp_path / "continual.yaml"
    path.write_text(yaml.safe_dump(tree))
    run = tmp_path / "run"
    ran = run_cli("continual", "run", "-c", path, "--strategies", "finetune,peso", "--run-dir", run)
    assert ran.code == 0, ran.stderr
    assert "peso" in ran.stdout and (run / "results.png").is_file()
    recorded = yaml.safe_load((run / "config.yaml").read_text())["continual"]["strategies"]
    assert [s["name"] for s in recorded] == ["pretrain", "finetune", "peso"]  # the whole protocol
    assert not (run / "seed-42" / "pretrain").exists()
    from lifelora.continual.report import summarize

    two_seeds = continual_config(llama_dir, seeds=[42, 7])
    assert summarize(run, two_seeds)["seeds"] == [42]  # the report names only the seeds that ran
    more = run_cli("continual", "run", "-c", path, "--strategies", "pretrain", "--run-dir", run)
    assert more.code == 0 and (run / "seed-42" / "pretrain" / "period-2" / "done.json").is_file()
    other = run_cli("continual", "run", "-c", path, "train.lr=0.5", "--run-dir", run)
    assert other.code == 2 and len(other.error_lines) == 1
    assert "holds a run of another protocol (it differs in train.lr)" in other.stderr
    (run / "results.md").unlink()
    reported = run_cli("continual", "report", run)
    assert reported.code == 0 and (run / "results.md").is_file()
    resumed = run_cli("continual", "run", "--resume", run)
    assert resumed.code == 0, resumed.stderr
    unknown = run_cli("continual", "run", "-c", path, "--strategies", "ewc", "--run-dir", tmp_path / "x")
    assert unknown.code == 2
    assert (
        unknown.stderr.strip()
        .splitlines()[-1]
        .endswith("--strategies: 'ewc' is not in the config's strategies (pretrain, finetune, peso)")
    )
    not_a_run = run_cli("continual", "report", tmp_path)
    assert not_a_run.code == 2 and "not a continual run directory" in not_a_run.stderr
    bad_seeds = run_cli("continual", "run", "-c", path, "--seeds", "1,x", "--run-dir", tmp_path / "y")
    assert bad_seeds.code == 2 and "--seeds: expected a comma-separated list of integers" in bad_seeds.stderr
    no_adapter = run_cli("continual", "run", "-c", path, "adapter=null", "--run-dir", tmp_path / "z")
    assert no_adapter.code == 2 and "a continual run trains an adapter" in no_adapter.stderr


def test_with_two_epochs_each_period_keeps_its_best_validation_epoch(data, llama_dir, home, tmp_path):
    cfg = continual_config(llama_dir, [{"name": "finetune"}])
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    task = NextItemTask(data, str(llama_dir), cfg.semantic_ids, log=lambda _m: None)
    run_continual(cfg, tmp_path, log=lambda _m: None, stream=Stream(task, cfg, lambda _m: None))
    train = read_json(tmp_path / "seed-42" / "finetune" / "period-1" / "done.json")["train"]
    assert len(train["valid_losses"]) == 2
    assert train["valid_losses"][train["best_epoch"] - 1] == min(train["valid_losses"])


def test_a_click_through_lens_cannot_evolve_on_a_period_whose_validation_holds_one_label(late_data, tmp_path):
    from test_lens import small_config

    from lifelora.errors import LifeloraError
    from lifelora.lens import DINLens
    from lifelora.lens.periods import ClickLenses

    samples = late_data.samples

    def period_samples(period: int, split: str) -> pl.DataFrame:
        rows = samples[period * 100 : (period + 1) * 100]
        return (
            rows.with_columns(pl.lit(1).cast(rows["label"].dtype).alias("label"))
            if split == "valid"
            else rows
        )

    named = DINLens.create(small_config(), late_data)
    lenses = ClickLenses(late_data, period_samples, "retrain", named, tmp_path, log=lambda _m: None)
    with pytest.raises(
        LifeloraError, match=r"^continual.lens: retrain: period 0's 100 validation samples hold one"
    ):
        lenses.at(0)
    assert not (tmp_path / "period-0" / "done.json").exists()


def test_frobenius_is_the_releases_l2_unsquared_and_averaged_over_modules():
    a = torch.tensor([[3.0, 4.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    live = {"x.q_proj.lora_A.weight": a, "x.q_proj.lora_B.weight": b, "x.v_proj.lora_A.weight": 2 * a}
    anchor = {name: torch.zeros_like(t) for name, t in live.items()}
    # (‖A_q‖ + ‖B_q‖ + ‖A_v‖) / 2 modules = (5 + 1 + 10) / 2
    assert float(penalty(live, anchor, "frobenius", weight=0.5)) == pytest.approx(0.5 * 8.0)
    params = {name: torch.nn.Parameter(value.clone()) for name, value in anchor.items()}
    hook = ProximalHook(params, anchor, "frobenius", 1.0)
    hook.loss_term(TrainContext(None, TrainSettings()))
    assert all(float(g.abs().max()) == 0.0 for g in hook._grad)  # no NaN at the anchor


def test_proximal_terms_cover_lora_factors_only():
    """Never trainable token rows, never whole trained copies of the embedding or head (the release
    regularizes the LoRA factors only); a personalized bank's factors and gate are covered."""
    from tiny_llm import tiny_model

    from lifelora.adapters import attach
    from lifelora.adapters.lora.config import SharedLoraConfig
    from lifelora.adapters.personalized.config import PersonalizedConfig
    from lifelora.continual.strategies.proximal import regularized

    whole = attach(tiny_model("llama", 64, seed=0), SharedLoraConfig(r=2, modules_to_save=["lm_head"]))
    names = set(whole.branch_parameters())
    assert any("modules_to_save" in n for n in names)
    covered = set(regularized(whole.branch_parameters()))
    assert covered and all(".lora_A." in n or ".lora_B." in n for n in covered)
    assert covered == {n for n in names if ".lora_" in n}
    rows = attach(tiny_model("llama", 64, seed=0), SharedLoraConfig(r=2, trainable_token_indices=[60, 61]))
    assert all("token" not in n for n in regularized(rows.branch_parameters()))
    bank = attach(tiny_model("llama", 64, seed=0), PersonalizedConfig(n_loras=2, r=2), routing_dim=8)
    kept = set(regularized(bank.branch_parameters()))
    assert any("gate" in n for n in kept) and any("lora_A" in n for n in kept)
    assert all("token" not in n for n in kept)


def test_the_release_protocol_settings(data, llama_dir, home, tmp_path):
    """later_lr_for all: a fresh branch trains at later_lr too; matrix same: block t only; first_train: D1's
    own subset; min_period_items: users with fewer in-period items leave the period; each period records
    how far training moved the adapter."""
    strategies = [{"name": "finetune"}, {"name": "sumlora"}, {"name": "peso", "proximal": "frobenius"}]
    sasrec_yaml = tmp_path / "sasrec.yaml"
    tiny_sasrec = {"model": {"hidden": 8, "max_len": 8, "heads": 1}, "train": {"epochs": 2, "batch_size": 16}}
    sasrec_yaml.write_text(yaml.safe_dump(tiny_sasrec))
    cfg = continual_config(
        llama_dir,
        strategies,
        later_lr_for="all",
        matrix="same",
        first_train=24,
        min_period_items=3,
        baselines=["popularity", "sasrec"],
        baseline_sasrec=str(sasrec_yaml),
    )
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"schedule": "constant"})})
    task = NextItemTask(data, str(llama_dir), cfg.semantic_ids, log=lambda _m: None)
    stream = Stream(task, cfg, log=lambda _m: None)
    assert len(stream.subset(0, "train")) == 24 and len(stream.subset(1, "train")) == 16
    users = data.sequence_users()
    for period in range(3):
        counts = np.bincount(users[stream.periods == period], minlength=data.users.height)
        for split in ("train", "valid", "test"):
            kept = stream.targets(period, split).user_idx
            assert (counts[kept] >= 3).all()
        everyone = block_leave_one_out(data, stream.periods, period, "test").user_idx
        assert set(everyone) - set(stream.targets(period, "test").user_idx) == set(
            everyone[counts[everyone] < 3]
        )
    run_continual(cfg, tmp_path, log=lambda _m: None, stream=stream)
    root = tmp_path / "seed-42"
    first_lr = read_json(root / FIRST / "curve.json")[0]["lr"]
    for name in ("finetune", "sumlora"):
        assert read_json(root / name / "period-1" / "curve.json")[0]["lr"] == pytest.approx(0.1 * first_lr)
        drift = read_json(root / name / "period-2" / "done.json")["train"]["drift"]
        assert drift["distance"] > 0
    assert sorted(p.name for p in (root / "evals" / "finetune" / "period-1").glob("block-*.json")) == [
        "block-1.json"
    ]
    # the report's per-block intervals and PESO − finetune paired over the same users
    intervals = read_json(tmp_path / "blocks.json")["42"]
    ndcg = intervals["strategies"]["peso"]["ndcg@10"]
    assert set(ndcg["blocks"]) == {"0", "1", "2"} and ndcg["mean"]["blocks"] == 2
    for figure in ndcg["blocks"].values():
        assert figure["low"] <= figure["mean"] <= figure["high"] and figure["users"] > 1
    assert set(intervals["paired"]["peso"]["hit@10"]) == {"1", "2"}
    text = (tmp_path / "results.md").read_text()
    assert "**peso − finetune (points of %), seed 42**" in text
    pooled = read_json(tmp_path / "results.json")["paired_over_seeds"]["peso"]["ndcg@10"]
    by_block = intervals["paired"]["peso"]["ndcg@10"]
    assert pooled["seeds"] == [42]
    assert pooled["difference"] == pytest.approx(np.mean([by_block[j]["difference"] for j in ("1", "2")]))
    assert pooled["low"] <= pooled["difference"] <= pooled["high"]
    assert "**Paired with finetune, over seeds and blocks 1..**" in text
    table = text.split("**The table, per seed**")[1].split("\n\n")[1].splitlines()
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]) for line in table[2:]}
    ran = {(title, "42") for title in ("finetune", "sumlora", "peso")}
    assert rows == ran | {("popularity", "–"), ("sasrec", "–")}
    assert (tmp_path / "blocks.png").stat().st_size > 0
    force = read_json(tmp_path / "force.json")["42"]
    assert force["peso"]["2"]["ratio"] > 0 and "ratio" not in force["finetune"]["2"]
    finetune_drift = read_json(root / "finetune" / "period-2" / "done.json")["train"]["drift"]
    assert force["finetune"]["2"]["distance"] == pytest.approx(finetune_drift["distance"])
    assert "**The proximal force, seed 42**" in text
    # popularity: the blocks so far minus block t's held-out targets, on the same tested users
    from lifelora.continual.baselines import seen_counts

    for period in range(3):
        held = sum(len(block_leave_one_out(data, stream.periods, period, s)) for s in ("valid", "test"))
        assert seen_counts(stream, period).sum() == (stream.periods <= period).sum() - held
    for name in ("popularity", "sasrec"):
        rows = intervals["strategies"][name]["hit@10"]["blocks"]
        assert {j: f["users"] for j, f in rows.items()} == {j: f["users"] for j, f in ndcg["blocks"].items()}
    assert (tmp_path / "baselines" / "sasrec" / "period-2" / "done.json").is_file()  # retrained per block


def _proximal_solution(target: torch.Tensor, previous: torch.Tensor, form: str, lam: float) -> torch.Tensor:
    """argmin_v ½‖v − target‖² + hook(v): a least-squares toy with every curvature h = 1."""
    v = torch.nn.Parameter(previous.clone())
    hook = ProximalHook({"w.q_proj.lora_A": v}, {"w.q_proj.lora_A": previous}, form, lam)
    optimizer = torch.optim.LBFGS([v], max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * (v - target).pow(2).sum() + hook.loss_term(TrainContext(None, TrainSettings()))
        loss.backward()
        return loss

    optimizer.step(closure)
    return v.detach()


def test_the_released_kl_preserves_nothing_measurable_and_the_sized_kl_does_like_l2():
    """A factor of N = 2,000 entries pulled toward a target δ away from its anchor (δ centred, small): the
    l2 step keeps the share h/(h+λ) of the move, the released softmax-KL nearly all of it (its pull is
    ~λ/N), the size-scaled KL the same share as l2."""
    torch.manual_seed(0)
    n, lam = 2000, 1.0
    previous = torch.randn(n, dtype=torch.float64) * 0.02
    delta = torch.randn(n, dtype=torch.float64) * 1e-3
    delta -= delta.mean()
    moved = {}
    for form in ("l2", "softmax_kl", "softmax_kl_sized"):
        v = _proximal_solution(previous + delta, previous, form, lam)
        moved[form] = float((v - previous) @ delta / (delta @ delta))
    assert moved["l2"] == pytest.approx(1 / (1 + lam), abs=1e-6)
    assert moved["softmax_kl"] > 0.999
    assert moved["softmax_kl_sized"] == pytest.approx(1 / (1 + lam), abs=0.01)


def test_lambda_is_chosen_on_validation_loss_over_the_seeds_every_candidate_has_finished(llama_dir, tmp_path):
    from lifelora.continual.selection import choices, choices_markdown
    from lifelora.io import write_json

    strategies = [
        {"name": "finetune"},
        {"name": "peso", "label": "peso-0.5", "weight": 0.5},
        {"name": "peso", "label": "peso-2", "weight": 2.0},
        {"name": "peso", "label": "l2", "proximal": "l2", "weight": 2.0},
    ]
    cfg = continual_config(llama_dir, strategies, seeds=[1, 2])  # 3 periods; seed 2 never ran
    losses = {"finetune": [4.0, 4.0], "peso-0.5": [5.0, 3.0], "peso-2": [4.5, 4.4], "l2": [1.0, 1.0]}
    for title, (best, other) in losses.items():
        for period in (1, 2):
            train = {"best_epoch": 2, "valid_losses": [other + period, best + period]}  # epoch 2 kept
            write_json(tmp_path / "seed-1" / title / f"period-{period}" / "done.json", {"train": train})
    (found,) = choices(tmp_path, cfg)  # finetune and l2 have no alternatives: no choice to make
    assert found["family"] == "peso softmax_kl" and found["seeds"] == [1]
    assert found["validation_loss"] == {"peso-0.5": 6.5, "peso-2": 6.0} and found["chosen"] == "peso-2"
    (tmp_path / "seed-1" / "peso-0.5" / "period-2" / "done.json").unlink()
    (found,) = choices(tmp_path, cfg)
    assert found["validation_loss"]["peso-0.5"] is None and found["chosen"] is None
    assert found["seeds"] == [] and found["unfinished_seeds"] == [1]
    for title, loss in (("peso-0.5", 2.0), ("peso-2", 3.0)):  # seed 2: both finish; seed 1 still waits
        for period in (1, 2):
            train = {"best_epoch": 1, "valid_losses": [loss + period]}
            write_json(tmp_path / "seed-2" / title / f"period-{period}" / "done.json", {"train": train})
    (found,) = choices(tmp_path, cfg)
    assert found["seeds"] == [2] and found["unfinished_seeds"] == [1]
    assert found["validation_loss"] == {"peso-0.5": 3.5, "peso-2": 4.5} and found["chosen"] == "peso-0.5"
    text = choices_markdown([found], 3)
    assert "| peso softmax_kl | peso-0.5 3.50000, peso-2 4.50000 | 2 | 1 | peso-0.5 |" in text
    for period in (1, 2):  # peso-2 lower by less than 1e-4: a tie, and it goes to the first listed
        write_json(
            tmp_path / "seed-2" / "peso-2" / f"period-{period}" / "done.json",
            {"train": {"best_epoch": 1, "valid_losses": [1.99995 + period]}},
        )
    (found,) = choices(tmp_path, cfg)
    assert found["chosen"] == "peso-0.5" and found["tied"] == ["peso-0.5", "peso-2"]
    assert "| peso-0.5 (tied within 0.0001 with peso-2: the first listed) |" in choices_markdown([found], 3)


def test_the_summary_averages_only_the_seeds_that_finished_every_period(llama_dir, tmp_path, monkeypatch):
    from lifelora.continual import report

    cfg = continual_config(llama_dir, [{"name": "finetune"}], seeds=[1, 2, 3])  # 3 periods
    done = {1: (3, 600.0, 0.2), 2: (1, 0.0, float("nan")), 3: (3, 900.0, 0.4)}  # seed 2: only the shared D1
    for seed in done:
        (tmp_path / f"seed-{seed}").mkdir()

    def seed_result(root, title, cfg):
        periods, seconds, ndcg = done[int(root.name.split("-")[1])]
        return {"summary": {"ndcg@10": ndcg, "seconds": seconds, "periods_done": periods}}

    monkeypatch.setattr(report, "seed_result", seed_result)
    finetune = report.summarize(tmp_path, cfg)["strategies"]["finetune"]
    assert finetune["finished_seeds"] == [1, 3]
    assert finetune["mean"] == pytest.approx({"ndcg@10": 0.3, "seconds": 750.0, "periods_done": 3.0})
    done[1] = done[3] = (2, 300.0, float("nan"))  # no seed has finished: every seed, to show progress
    finetune = report.summarize(tmp_path, cfg)["strategies"]["finetune"]
    assert finetune["finished_seeds"] == [] and finetune["mean"]["seconds"] == 200.0
    assert report.table_rows({"task": cfg.task, "strategies": {"finetune": finetune}})[0][:2] == [
        "finetune",
        "–",
    ]


def test_the_band_plot_leaves_out_a_strategy_that_has_only_the_shared_block_0():
    from lifelora.continual.blocks import bands

    def figure(mean):
        return {"mean": mean, "low": mean - 1, "high": mean + 1}

    intervals = {"1": {"strategies": {
        "finetune": {"ndcg@10": {"blocks": {0: figure(2.0), 1: figure(1.0)}}},
        "replay": {"ndcg@10": {"blocks": {0: figure(2.0)}}},
        "sumlora": {"ndcg@10": {"blocks": {}}},
    }}}  # fmt: skip
    lines, shaded = bands(intervals, "ndcg@10", 3)
    assert list(lines) == ["finetune"] and lines["finetune"][:2] == [2.0, 1.0]
    assert np.isnan(lines["finetune"][2]) and shaded["finetune"][0][:2] == [1.0, 0.0]


def test_paired_differences_pool_over_the_seeds_that_finished_every_block():
    from lifelora.continual.blocks import Z95, paired_over_seeds

    def difference(mean: float, se: float) -> dict:
        return {"difference": mean, "low": mean - Z95 * se, "high": mean + Z95 * se, "p_value": 0.5}

    def seed(by_block: dict) -> dict:
        return {"strategies": {}, "baseline": "finetune", "paired": {"peso": {"hit@10": by_block}}}

    intervals = {
        "1": seed({1: difference(0.02, 0.01), 2: difference(0.00, 0.01)}),
        "2": seed({1: difference(0.04, 0.02), 2: difference(0.02, 0.02)}),
        "3": seed({1: difference(0.50, 0.01)}),  # block 2 not finished: not pooled
    }
    pooled = paired_over_seeds(intervals, ("hit@10",), 3)["peso"]["hit@10"]
    assert pooled["seeds"] == [1, 2]
    assert pooled["difference"] == pytest.approx(0.02)
    se = math.sqrt(2 * 0.01**2 + 2 * 0.02**2) / 4
    assert pooled["high"] - pooled["low"] == pytest.approx(2 * Z95 * se)
    assert pooled["p_value"] == pytest.approx(2 * scipy.stats.norm.sf(0.02 / se))
