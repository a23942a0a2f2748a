"""Training the lens on the full training split: AdamW, early stopping on validation AUC,
best checkpoint kept in the run directory; evaluation and hidden-vector export."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from lifelora.data.prepared import PreparedData
from lifelora.io import atomic_path, read_json, write_json, write_parquet
from lifelora.lens.config import LensConfig
from lifelora.lens.features import EncodedSplit
from lifelora.lens.model import Lens
from lifelora.metrics.ctr import ctr_metrics
from lifelora.precision import autocast
from lifelora.report import plot_curve
from lifelora.run import seed_everything


def evaluate(lens: Lens, encoded: EncodedSplit) -> tuple[dict[str, float], np.ndarray]:
    scores = lens.predict(encoded, lens.config.train.eval_batch_size)
    return ctr_metrics(encoded.labels, scores, groups=encoded.user_idx), scores


def train_epoch(
    lens: Lens, train: EncodedSplit, optimizer: torch.optim.Optimizer, epoch: int
) -> tuple[float, float]:
    """One pass in a seeded random order; returns (mean loss, samples per second)."""
    cfg = lens.config.train
    lens.model.train()
    generator = torch.Generator().manual_seed(cfg.seed + epoch)
    order = torch.randperm(len(train), generator=generator)
    labels = torch.from_numpy(train.labels)
    total, count, start = 0.0, 0, time.perf_counter()
    bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch + 1}", unit="batch", leave=False)
    for offset in bar:
        idx = order[offset : offset + cfg.batch_size]
        with autocast(cfg.precision):
            logits, _ = lens.model(train.batch(idx))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
        count += len(idx)
        if offset // cfg.batch_size % 50 == 0:
            bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1), count / (time.perf_counter() - start)


def fit(config: LensConfig, data: PreparedData, run_dir: Path, log=print) -> tuple[Lens, dict]:
    """Train with early stopping; the best epoch's weights end up in `run_dir/lens` and are returned."""
    cfg = config.train
    seed_everything(cfg.seed)
    lens = Lens.create(config, data)
    train = lens.encode(data, "train", limit=cfg.max_train_samples)
    valid = lens.encode(data, "valid")
    optimizer = torch.optim.AdamW(lens.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    curve, best_auc, best_epoch, speeds = [], -1.0, -1, []
    for epoch in range(cfg.max_epochs):
        loss, speed = train_epoch(lens, train, optimizer, epoch)
        metrics, _ = evaluate(lens, valid)
        speeds.append(speed)
        curve.append(
            {"epoch": epoch + 1, "train_loss": loss, "samples_per_s": speed}
            | {f"valid_{k}": v for k, v in metrics.items()}
        )
        log(
            f"epoch {epoch + 1}: train loss {loss:.4f}, valid AUC {metrics['AUC']:.4f}, "
            f"LogLoss {metrics['LogLoss']:.4f} ({speed:,.0f} samples/s)"
        )
        write_json(run_dir / "curve.json", curve)
        if metrics["AUC"] > best_auc:
            best_auc, best_epoch = metrics["AUC"], epoch + 1
            lens.save(run_dir / "lens")
        elif epoch + 1 - best_epoch >= cfg.patience:
            log(f"early stop: no better validation AUC for {cfg.patience} epoch(s); best epoch {best_epoch}")
            break
    summary = {
        "best_epoch": best_epoch,
        "epochs_run": len(curve),
        "train_samples": len(train),
        "samples_per_s": float(np.median(speeds)),
    }
    return Lens.load(run_dir / "lens"), summary


def evaluate_split(lens: Lens, data: PreparedData, split: str, out_dir: Path) -> dict[str, float]:
    """Metrics for a split, with a predictions Parquet (sample_id, label, score) beside them."""
    encoded = lens.encode(data, split)
    metrics, scores = evaluate(lens, encoded)
    write_parquet(
        out_dir / f"predictions_{split}.parquet",
        pl.DataFrame(
            {
                "sample_id": encoded.samples["sample_id"],
                "label": encoded.labels.astype(np.int8),
                "score": scores,
            }
        ),
    )
    return metrics


def export_hidden(lens: Lens, data: PreparedData, split: str, path: Path) -> Path:
    """Save the split's hidden vectors [n, H] with their sample ids, for the personalized LoRA."""
    encoded = lens.encode(data, split)
    _, hidden = lens.predict(encoded, lens.config.train.eval_batch_size, hidden=True)
    with atomic_path(path) as tmp:
        save_file(
            {
                "hidden": hidden.contiguous(),
                "sample_id": torch.tensor(encoded.samples["sample_id"].to_numpy()),
            },
            str(tmp),
        )
    return path


def train_run(config: LensConfig, data: PreparedData, run_dir: Path, log=print) -> dict:
    """The whole `lens train` job: fit, then evaluate the best checkpoint on valid and test."""
    start = time.perf_counter()
    lens, summary = fit(config, data, run_dir, log=log)
    metrics = {split: evaluate_split(lens, data, split, run_dir) for split in ("valid", "test")}
    result = {
        "dataset": data.name,
        "kind": config.kind,
        "use_ratings": config.model.use_ratings,
        **summary,
        "seconds": round(time.perf_counter() - start, 1),
        "metrics": metrics,
    }
    write_json(run_dir / "metrics.json", result)
    curve = read_json(run_dir / "curve.json")
    plot_curve(curve, run_dir / "curve.png", f"{config.kind.upper()} on {data.name}")
    return result
