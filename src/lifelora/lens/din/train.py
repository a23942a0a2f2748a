"""Training the lens on the full training split through the one training loop (AdamW), validated after
every epoch: the best epoch's weights kept in the run directory, early stopping on validation AUC;
evaluation and hidden-vector export."""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file

from lifelora import distributed
from lifelora.data.prepared import PreparedData
from lifelora.io import atomic_path, read_json, write_json, write_parquet
from lifelora.lens.din import DINLens
from lifelora.lens.din.config import LensConfig
from lifelora.lens.din.features import EncodedSplit, LensBatch
from lifelora.metrics.ctr import ctr_metrics
from lifelora.report import plot_curve
from lifelora.run import seed_everything
from lifelora.training import train_model
from lifelora.training.hooks import TrainContext, TrainHook


def evaluate(
    lens: DINLens, encoded: EncodedSplit, shard: bool = False
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics and scores; `shard` spreads the batches over the processes (`lifelora.distributed`)."""
    scores = lens.predict(encoded, lens.config.train.eval_batch_size, shard=shard)
    return ctr_metrics(encoded.labels, scores, groups=encoded.user_idx), scores


class LensRows(torch.utils.data.Dataset):
    """An encoded split as a dataset of row positions: the loader samples positions and `collate` builds
    the whole batch at once (vectorised), the lens inputs as a dict of tensors that Accelerate can move."""

    def __init__(self, encoded: EncodedSplit):
        self.encoded = encoded
        self.labels = torch.from_numpy(encoded.labels)

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, row: int) -> int:
        return row

    def collate(self, rows: list[int]) -> dict:
        idx = torch.tensor(rows)
        inputs = self.encoded.batch(idx)
        fields = {f.name: getattr(inputs, f.name) for f in dataclasses.fields(inputs)}
        return {"inputs": fields, "labels": self.labels[idx]}


def lens_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Binary cross-entropy of the click logit (computed in fp32)."""
    logits, _ = model(LensBatch(**batch["inputs"]))
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["labels"])


def _on_cpu(lens: DINLens) -> DINLens:
    """`DINLens.predict` builds its batches on the CPU: a lens training on a GPU is validated as a CPU copy."""
    if next(lens.model.parameters()).device.type == "cpu":
        return lens
    cpu = copy.copy(lens)
    cpu.model = copy.deepcopy(lens.model).cpu()
    return cpu


class Validation(TrainHook):
    """After every epoch: validation metrics into `curve.json`, the best epoch's lens (by AUC) saved to
    `run_dir/lens`, and a stop after `patience` epochs without a better AUC."""

    def __init__(self, lens: DINLens, valid: EncodedSplit, run_dir: Path, log=print):
        self.lens, self.valid, self.run_dir, self.log = lens, valid, run_dir, log
        self.curve: list[dict] = []
        self.best_auc, self.best_epoch = -1.0, -1

    def epoch_end(self, ctx: TrainContext) -> bool:
        lens, epoch = _on_cpu(self.lens), ctx.epoch + 1
        metrics, _ = evaluate(lens, self.valid)
        self.curve.append(
            {"epoch": epoch, "train_loss": ctx.epoch_loss, "samples_per_s": ctx.samples_per_s}
            | {f"valid_{k}": v for k, v in metrics.items()}
        )
        self.log(
            f"epoch {epoch}: train loss {ctx.epoch_loss:.4f}, valid AUC {metrics['AUC']:.4f}, "
            f"LogLoss {metrics['LogLoss']:.4f} ({ctx.samples_per_s:,.0f} samples/s)"
        )
        write_json(self.run_dir / "curve.json", self.curve)
        if metrics["AUC"] > self.best_auc:
            self.best_auc, self.best_epoch = metrics["AUC"], epoch
            lens.save(self.run_dir / "lens")
            return False
        patience = self.lens.config.train.patience
        if epoch - self.best_epoch >= patience:
            self.log(
                f"early stop: no better validation AUC for {patience} epoch(s); best epoch {self.best_epoch}"
            )
            return True
        return False


def fit(
    config: LensConfig,
    data: PreparedData,
    run_dir: Path,
    log=print,
    train: pl.DataFrame | None = None,
    valid: pl.DataFrame | None = None,
    until: int | None = None,
    start: DINLens | None = None,
) -> tuple[DINLens, dict]:
    """Train with early stopping; the best epoch's weights end up in `run_dir/lens` and are returned.

    Default: the training split, validated on the validation split, vocabularies as of the training
    split's end. A continual period passes its own `train` and `valid` samples, the time its
    vocabularies reach (`until`) and `start`, a lens to go on training from (`DINLens.create`).
    Seeded once, here: model init, then dropout in training, draw one stream (the loop does not reseed);
    the data order depends on the seed and the epoch only."""
    cfg = config.train
    seed_everything(cfg.seed)
    lens = DINLens.create(config, data, until, start)
    train = data.split("train") if train is None else train
    valid = data.split("valid") if valid is None else valid
    rows = LensRows(lens.encode_samples(data, train.head(cfg.max_train_samples or train.height)))
    validation = Validation(lens, lens.encode_samples(data, valid), run_dir, log)
    train_model(lens.model, rows, rows.collate, lens_loss, cfg, run_dir, hooks=[validation], log=log)
    summary = {
        "best_epoch": validation.best_epoch,
        "epochs_run": len(validation.curve),
        "train_samples": len(rows),
        "samples_per_s": float(np.median([row["samples_per_s"] for row in validation.curve])),
    }
    return DINLens.load(run_dir / "lens"), summary


def evaluate_split(lens: DINLens, data: PreparedData, split: str, out_dir: Path) -> dict[str, float]:
    """Metrics for a split, with a predictions Parquet (sample_id, label, score) beside them. Under
    several processes each scores its share; the main process writes."""
    encoded = lens.encode(data, split)
    metrics, scores = evaluate(lens, encoded, shard=True)
    if not distributed.is_main_process():
        return metrics
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


def export_hidden(lens: DINLens, data: PreparedData, split: str, path: Path) -> Path:
    """Save the split's hidden vectors [n, H] with their sample ids, for the personalized LoRA."""
    encoded = lens.encode(data, split)
    _, hidden = lens.predict(encoded, lens.config.train.eval_batch_size, hidden=True, shard=True)
    if not distributed.is_main_process():
        return path
    with atomic_path(path) as tmp:
        save_file(
            {
                "hidden": hidden.contiguous(),
                "sample_id": torch.tensor(encoded.samples["sample_id"].to_numpy()),
            },
            str(tmp),
        )
    return path


def train_lens(config: LensConfig, data: PreparedData, run_dir: Path, log=print) -> dict:
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
    plot_curve(
        curve, run_dir / "curve.png", f"{config.kind.upper()} on {data.name}", best=result["best_epoch"]
    )
    return result
