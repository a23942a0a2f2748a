"""`lifelora bench lens`: lens training throughput and test quality, and bf16 ÷ fp32 step time."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lifelora.bench.timing import alternate


def _train_step(config, data):
    """The loop's training step for a fresh lens at `config.train.precision`, as a call that draws its own
    batch (of `config.train.batch_size`, built inside the timed step as in training)."""
    import torch

    from lifelora.lens.din import DINLens
    from lifelora.lens.din.train import LensRows, lens_loss
    from lifelora.precision import autocast
    from lifelora.training import TrainContext, TrainStep

    cfg = config.train
    lens = DINLens.create(config, data)
    rows = LensRows(lens.encode(data, "train", limit=20 * cfg.batch_size))
    optimizer = torch.optim.AdamW(lens.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = TrainStep(
        lens_loss, optimizer, max_grad_norm=cfg.max_grad_norm, forward_context=lambda: autocast(cfg.precision)
    )
    ctx = TrainContext(lens.model.train(), cfg)
    generator = torch.Generator().manual_seed(0)

    def run():
        idx = torch.randint(0, len(rows), (cfg.batch_size,), generator=generator)
        ctx.batch = rows.collate(idx.tolist())
        step(lens.model, ctx)

    return run


def bench_lens(quick: bool, dataset: str | None, log) -> dict:
    """DINLens training throughput and test quality (DIN, default config), and bf16 ÷ fp32 step time."""
    from lifelora.data.store import open_prepared
    from lifelora.lens.din.config import LensConfig
    from lifelora.lens.din.train import train_lens
    from lifelora.precision import resolve

    dataset = dataset or "ml-100k"
    data = open_prepared(dataset, prepare_missing=True)
    train = {"epochs": 1, "max_train_samples": 20_000} if quick else {}
    config = LensConfig.model_validate({"dataset": dataset, "train": train})
    with tempfile.TemporaryDirectory() as tmp:
        result = train_lens(config, data, Path(tmp), log=log)
    test = result["metrics"]["test"]
    in_bf16 = config.model_copy(update={"train": config.train.model_copy(update={"precision": "bf16"})})
    in_fp32 = config.model_copy(update={"train": config.train.model_copy(update={"precision": "fp32"})})
    ratio = alternate(
        _train_step(in_bf16, data), _train_step(in_fp32, data), 2 if quick else 8, ("bf16", "fp32")
    )
    return {
        "dataset": dataset,
        "precision": resolve(config.train.precision),
        "samples_per_s": round(result["samples_per_s"], 1),
        "auc": round(test["AUC"], 4),
        "logloss": round(test["LogLoss"], 4),
        "gauc": round(test["gAUC"], 4),
        "best_epoch": result["best_epoch"],
        "train_seconds": result["seconds"],
        "bf16_vs_fp32_step_time": {**ratio, "batch": config.train.batch_size},
    }
