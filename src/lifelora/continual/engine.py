"""The continual engine: one strategy carried through the periods of a stream, for one seed, resumable
period by period.

Period 0 is the same for every strategy (a fresh adapter trained on D1), so `train_first_period` runs it
once per seed and every strategy starts from its saved adapter. A period is finished once its
`done.json` is written, last, after the adapter's branches, the strategy's state and the period's
evaluations: a killed run restarts after the last finished period, with the same adapter and strategy
state, and each period's training is seeded by (seed, period) only, so it reaches the same result.

Run directory of one seed:
    period-0/                   adapter/<branch>/, branches.json, curve.json, done.json
    <strategy>/period-<t>/      the same, plus strategy.safetensors (an anchor, a subspace)
    evals/<model>/block-<j>.json   the metrics of one trained model on block j's test set
    evals/<model>/lens-<t>/block-<j>.json   the same when the lens evolves: routed by period t's lens
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lifelora.adapters import Adapter, is_routed, load
from lifelora.continual.config import ContinualConfig
from lifelora.continual.strategies import PeriodContext, Strategy
from lifelora.continual.strategies.proximal import regularized
from lifelora.continual.stream import Stream
from lifelora.errors import LifeloraError
from lifelora.io import atomic_path, read_json, write_json
from lifelora.run import describe_machine, machine_kind
from lifelora.training import BestEpoch

FIRST = "period-0"


def period_seed(seed: int, period: int) -> int:
    """One seed per (run seed, period): a period's training never depends on how the run got there."""
    return seed * 1000 + period


def eval_path(evals: Path, cfg: ContinualConfig, model_key: str, period: int, block: int) -> Path:
    """Where the metrics of a model on block `block`'s test set, evaluated after `period`, are kept. With
    an evolving lens they are kept per routing lens: the same adapter routed by another period's lens is
    another recommender (pretrain's period-0 adapter is evaluated anew under every period's lens)."""
    evolving = cfg.adapter is not None and is_routed(cfg.adapter) and cfg.continual.lens != "frozen"
    routed = evals / model_key / f"lens-{period}" if evolving else evals / model_key
    return routed / f"block-{block}.json"


def blocks_after(n_periods: int, matrix: str, period: int) -> list[int]:
    """The blocks whose test sets the model after `period` is evaluated on (`continual.matrix`)."""
    if matrix == "full":
        return list(range(n_periods))
    if matrix == "same":
        return [period]
    return [j for j in (period, period + 1) if j < n_periods]


def model_after(root: Path, title: str, period: int) -> str | None:
    """The key of the model a strategy has after `period` (period 0: the shared D1 model; a strategy
    that did not train keeps its last one), None until that period is done."""
    if period == 0:
        return FIRST if (root / FIRST / "done.json").is_file() else None
    done = root / title / f"period-{period}" / "done.json"
    return read_json(done)["model"] if done.is_file() else None


def is_done(directory: Path) -> bool:
    return (directory / "done.json").is_file()


def restorable(directory: Path) -> bool:
    """A done period whose adapter (and strategy state, where it had one) is on disk: committed results
    carry neither, so on another machine a period can be done without being restorable."""
    if not (is_done(directory) and (directory / "branches.json").is_file()):
        return False
    saved = read_json(directory / "branches.json")
    adapters = all((directory / "adapter" / branch).is_dir() for branch in saved["branches"])
    return adapters and (not saved.get("state") or (directory / "strategy.safetensors").is_file())


def retrain_here(stream: Stream, directory: Path) -> dict:
    """Before a finished period is trained again for its missing adapter: what its `done.json` gains.
    Seeded training repeats its weights only on the same kind of machine (fp32 kernels sum in another
    order on another CPU: D1 of the Video Games preset, trained again on another CPU, validated at 5.187
    against the recorded 5.210), so elsewhere it is refused, one seed's rows never mixing two models,
    unless `continual.retrain_elsewhere` accepts it; the retrained period then names where it was first
    trained."""
    recorded = read_json(directory / "done.json").get("machine")
    here = machine_kind(stream.cfg.train.precision)
    if recorded is None or recorded == here:  # recorded before machines were: nothing to compare
        return {}
    message = (
        f"{directory}: trained on {describe_machine(recorded)}, this machine is {describe_machine(here)}: "
        "seeded training repeats its weights only on the same kind of machine"
    )
    if not stream.cfg.continual.retrain_elsewhere:
        raise LifeloraError(
            f"{message}, so retraining its missing adapter here would give another model than its results "
            "came from; resume on that kind of machine, run another seed, or set continual.retrain_elsewhere=true"
        )
    stream.log(f"{message}; training it again here anyway (continual.retrain_elsewhere)")
    return {"first_trained_on": recorded}


def _summary(stream: Stream, model_key: str, train: dict | None, start: float, retrained: dict) -> dict:
    """A period's `done.json`: the model it leaves, its training, seconds and the machine kind it ran on."""
    seconds = round(time.perf_counter() - start, 2)
    machine = machine_kind(stream.cfg.train.precision)
    return {"model": model_key, "train": train, "seconds": seconds, "machine": machine, **retrained}


def save_period(directory: Path, adapter: Adapter, strategy: Strategy | None, summary: dict) -> None:
    """Every branch of the adapter, the strategy's state, then `done.json` (the period counts as done)."""
    for branch in adapter.branches:
        adapter.save(directory / "adapter" / branch, branch)
    trainable = {
        b: any(p.requires_grad for p in adapter.branch_parameters(b).values()) for b in adapter.branches
    }
    state = {} if strategy is None else strategy.state_dict()
    write_json(
        directory / "branches.json",
        {"branches": adapter.branches, "trainable": trainable, "state": bool(state)},
    )
    if state:
        with atomic_path(directory / "strategy.safetensors") as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    write_json(directory / "done.json", summary)


def restore_period(directory: Path, base: torch.nn.Module, strategy: Strategy | None) -> Adapter:
    """The adapter (every branch, as trainable as it was) and the strategy state saved by `save_period`."""
    saved = read_json(directory / "branches.json")
    first, *rest = saved["branches"]
    adapter = load(base, directory / "adapter" / first, trainable=saved["trainable"][first])
    if first != adapter.branches[0]:
        raise RuntimeError(f"{directory}: branch {first!r} restored as {adapter.branches[0]!r}")
    for branch in rest:
        adapter.load_branch(directory / "adapter" / branch, branch, trainable=saved["trainable"][branch])
    adapter.model.train()
    state_file = directory / "strategy.safetensors"
    if strategy is not None and state_file.is_file():
        strategy.load_state_dict(load_file(str(state_file)), adapter)
    return adapter


def evaluate_model(
    stream: Stream, adapter: Adapter, model_key: str, period: int, evals: Path
) -> dict[int, dict]:
    """The model's metrics on each block `blocks_after(period)` names, computed once per (model, block)."""
    results = {}
    for block in blocks_after(stream.n_periods, stream.cfg.continual.matrix, period):
        path = eval_path(evals, stream.cfg, model_key, period, block)
        if not path.is_file():
            stream.log(f"evaluating {model_key} on block {block}'s test set")
            with adapter.merged():
                metrics = stream.evaluate(
                    adapter.model, stream.subset(block, "test"), path.parent, f"block-{block}"
                )
            write_json(path, {"model": model_key, "block": block, "after_period": period, **metrics})
        results[block] = read_json(path)
    return results


def adapter_weights(adapter: Adapter) -> dict[str, torch.Tensor]:
    """A copy of every branch's LoRA factors (and a bank's gate): what a proximal term would pull."""
    return {
        f"{branch}/{name}": value
        for branch in adapter.branches
        for name, value in regularized(adapter.snapshot(branch)).items()
    }


def drift(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """How far a period's training moved the adapter: ‖after − before‖ over every factor (a branch added
    in the period counts from its initial value), and that relative to ‖before‖."""
    moved = sum(float((after[k].float() - before[k].float()).pow(2).sum()) for k in after if k in before)
    size = sum(float(v.float().pow(2).sum()) for v in before.values())
    distance = moved**0.5
    return {"distance": distance, "relative": distance / size**0.5 if size > 0 else float("nan")}


def _train(
    stream: Stream,
    adapter: Adapter,
    samples,
    lr_scale: float,
    seed: int,
    period: int,
    directory: Path,
    hooks: list,
) -> dict:
    """One period's training; with more than one epoch and `select: valid_loss`, the best epoch's weights."""
    valid = None
    if stream.cfg.train.epochs > 1 and stream.cfg.continual.select == "valid_loss":
        valid = BestEpoch(partial(stream.valid_loss, samples=stream.subset(period, "valid")), stream.log)
        hooks = [*hooks, valid]
    result = stream.fit(
        adapter, samples, lr_scale, period_seed(seed, period), directory, hooks, f"period {period}"
    )
    if valid is not None:
        valid.restore()
        result.update(best_epoch=valid.best_epoch, valid_losses=valid.losses)
    write_json(directory / "curve.json", result.pop("curve"))
    return {k: v for k, v in result.items() if k not in ("is_main_process", "model")}


def train_first_period(
    stream: Stream, seed: int, root: Path, need_adapter: bool = False, log: Callable[[str], object] = print
) -> None:
    """Period 0, shared by every strategy: a fresh adapter on D1 at D1's learning rate, evaluated. Done
    without its adapter on disk, it trains again (seeded) only when a strategy needs the adapter."""
    directory = root / FIRST
    if restorable(directory) or (is_done(directory) and not need_adapter):
        return
    retrained = {}
    if is_done(directory):
        retrained = retrain_here(stream, directory)
        log(
            f"{directory}: done, but its adapter is not on disk (results travel without adapters): training it again"
        )
    start = time.perf_counter()
    stream.use_period(0)
    adapter = stream.build(period_seed(seed, 0))
    try:
        train = _train(stream, adapter, stream.subset(0, "train"), 1.0, seed, 0, directory, [])
        evaluate_model(stream, adapter, FIRST, 0, root / "evals")
        save_period(directory, adapter, None, _summary(stream, FIRST, train, start, retrained))
    finally:
        adapter.unload()


def _last(directory: Path, n_periods: int, finished: Callable[[Path], bool]) -> int:
    return max((t for t in range(1, n_periods) if finished(directory / f"period-{t}")), default=0)


def run_strategy(
    stream: Stream, strategy: Strategy, seed: int, root: Path, log: Callable[[str], object] = print
) -> None:
    """Periods 1.. of one strategy from the shared period 0 (or from its last finished period)."""
    base = stream.task.backbone.model
    directory = root / strategy.title
    done = _last(directory, stream.n_periods, is_done)
    if done == stream.n_periods - 1:
        return
    last = _last(directory, stream.n_periods, restorable)
    retrained = {t: retrain_here(stream, directory / f"period-{t}") for t in range(last + 1, done + 1)}
    if last < done:
        log(f"{strategy.title}: period {done}'s adapter is not on disk: training again after period {last}")
    pool = stream.pool()

    def context(period: int, adapter: Adapter) -> PeriodContext:
        """The period's view for the strategy; `forward` runs whichever adapter the context holds."""
        ctx = PeriodContext(
            period,
            adapter,
            seed,
            fresh=lambda: stream.build(period_seed(seed, period)),
            forward=None,
            log=log,
        )
        ctx.forward = lambda batches: stream.forward(
            ctx.adapter.model, stream.subset(period, "train"), batches
        )
        return ctx

    stream.use_period(last)
    if last == 0:
        train_first_period(stream, seed, root, need_adapter=True, log=log)
        adapter = restore_period(root / FIRST, base, None)
        strategy.end_period(context(0, adapter))
        model_key = FIRST
    else:
        adapter = restore_period(directory / f"period-{last}", base, strategy)
        model_key = read_json(directory / f"period-{last}" / "done.json")["model"]
        log(f"{strategy.title}: resuming after period {last}")
    try:
        for period in range(last + 1, stream.n_periods):
            start = time.perf_counter()
            here = directory / f"period-{period}"
            stream.use_period(period)
            ctx = context(period, adapter)
            torch.manual_seed(period_seed(seed, period))  # a new branch's init, whatever ran before
            adapter = ctx.adapter = strategy.begin_period(ctx)
            train = None
            if strategy.trains(period):
                samples = strategy.training_samples(period, pool, seed)
                settings = stream.cfg.continual
                lr_scale = (
                    settings.later_lr
                    if settings.later_lr_for == "all"
                    else strategy.lr_scale(period, settings.later_lr)
                )
                before = adapter_weights(adapter)
                train = _train(stream, adapter, samples, lr_scale, seed, period, here, strategy.hooks(ctx))
                train["drift"] = drift(before, adapter_weights(adapter))
                model_key = f"{strategy.title}/period-{period}"
            strategy.end_period(ctx)
            evaluate_model(stream, adapter, model_key, period, root / "evals")
            summary = _summary(stream, model_key, train, start, retrained.get(period, {}))
            save_period(here, adapter, strategy, summary)
    finally:
        adapter.unload()
