"""`lifelora bench sasrec`: SASRec training speed (seconds per epoch, against RecBole's 860–890 s per
ML-1M epoch) and the full-ranking NDCG@10 it reaches, with the time it took to get there."""

from __future__ import annotations

import tempfile
from pathlib import Path

RECBOLE_EPOCH_S = 875.0  # RecBole's SASRec on ML-1M, 860–890 s per epoch (research notes, §2)
SHIPPED = {"ml-1m": "lens/sasrec-ml1m.yaml", "ml-100k": "lens/sasrec-ml100k.yaml"}
QUICK = ["train.epochs=3", "train.compile=false"]  # a smoke run: compiling alone takes about a minute


def bench_sasrec(quick: bool, dataset: str | None, log) -> dict:
    """Train the shipped config (quick: ML-100K, 3 epochs, uncompiled) and report epoch_s, the
    validation curve as (elapsed seconds, NDCG@10) and the test metrics of the best epoch."""
    from lifelora.config import load_config, shipped_config
    from lifelora.data.store import open_prepared
    from lifelora.io import read_json
    from lifelora.lens.sasrec.config import SASRecConfig
    from lifelora.lens.sasrec.train import train_sasrec
    from lifelora.precision import resolve

    dataset = dataset or ("ml-100k" if quick else "ml-1m")
    path = shipped_config(SHIPPED[dataset]) if dataset in SHIPPED else None
    config = load_config(SASRecConfig, path, [f"dataset={dataset}", *(QUICK if quick else [])])
    data = open_prepared(dataset, config.preset, config.data_dir, prepare_missing=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_sasrec(config, data, Path(tmp), log=log)
        curve = read_json(Path(tmp) / "curve.json")
    test = result["metrics"]["test"]
    return {
        "dataset": dataset,
        "loss": config.train.loss,
        "precision": resolve(config.train.precision),
        "compile": config.train.compile,
        "epoch_s": result["epoch_s"],
        "speedup_vs_recbole": round(RECBOLE_EPOCH_S / result["epoch_s"], 1) if result["epoch_s"] else None,
        "epochs_run": result["epochs_run"],
        "best_epoch": result["best_epoch"],
        "seconds": result["seconds"],
        "valid_ndcg@10_by_elapsed_s": [
            [row["elapsed_s"], round(row["valid_ndcg@10"], 4)] for row in curve if "elapsed_s" in row
        ],
        "test_ndcg@10": round(test["all_items"]["ndcg@10"], 4),
        "test_hit@10": round(test["all_items"]["hit@10"], 4),
        "test_ndcg@10_seen_removed": round(test["seen_removed"]["ndcg@10"], 4),
        "test_hit@10_seen_removed": round(test["seen_removed"]["hit@10"], 4),
    }
