"""Named benchmarks (`lifelora bench NAME`): figures as JSON, appended with command, machine and date."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import psutil

from lifelora.bench_llm import bench_ranking, bench_scoring, bench_train_step
from lifelora.bench_personalized import bench_personalized
from lifelora.errors import LifeloraError
from lifelora.io import write_json

_PREPARE_WORKER = """
import json, resource, sys, tempfile, time
from pathlib import Path
start = time.perf_counter()
from lifelora.data.prepare import PRESETS, prepare, save_prepared
from lifelora.data.registry import load_raw
prepared = prepare(load_raw(sys.argv[1]), PRESETS["rella"])
with tempfile.TemporaryDirectory() as tmp:
    save_prepared(prepared, Path(tmp) / "out")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": round(seconds, 2), "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
                  "samples": prepared["meta"]["stats"]["samples"]}))
"""


def machine() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def bench_prepare(quick: bool, dataset: str | None, log) -> dict:
    """ReLLa preparation from raw files to saved Parquet, in a fresh process (fetch excluded)."""
    from lifelora.data.embedded import fetch

    dataset = dataset or ("ml-100k" if quick else "ml-1m")
    fetch(dataset)
    log(f"preparing {dataset} in a fresh process")
    result = subprocess.run([sys.executable, "-c", _PREPARE_WORKER, dataset], capture_output=True, text=True)
    if result.returncode != 0:
        raise LifeloraError(f"bench prepare: the worker failed: {result.stderr.strip().splitlines()[-1]}")
    return {"dataset": dataset, **json.loads(result.stdout.strip().splitlines()[-1])}


def _step_seconds(config, data, steps: int = 4) -> float:
    """Median seconds of one training step (batch of `config.train.batch_size`), after a warm-up step."""
    import time

    import torch

    from lifelora.lens.model import Lens
    from lifelora.precision import autocast

    lens = Lens.create(config, data)
    train = lens.encode(data, "train", limit=20 * config.train.batch_size)
    optimizer = torch.optim.AdamW(lens.model.parameters(), lr=config.train.lr)
    labels = torch.from_numpy(train.labels)
    times = []
    for step in range(steps + 1):
        idx = torch.randint(
            0, len(train), (config.train.batch_size,), generator=torch.Generator().manual_seed(step)
        )
        start = time.perf_counter()
        with autocast(config.train.precision):
            logits, _ = lens.model(train.batch(idx))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def bench_lens(quick: bool, dataset: str | None, log) -> dict:
    """Lens training throughput and test quality (DIN, default config), and bf16 ÷ fp32 step time."""
    from lifelora.demo import ensure_prepared
    from lifelora.lens.config import LensConfig
    from lifelora.lens.train import train_run

    dataset = dataset or "ml-100k"
    data = ensure_prepared(dataset)
    train = {"max_epochs": 1, "max_train_samples": 20_000} if quick else {}
    config = LensConfig.model_validate({"dataset": dataset, "train": train})
    with tempfile.TemporaryDirectory() as tmp:
        result = train_run(config, data, Path(tmp), log=log)
    test = result["metrics"]["test"]
    fp32 = _step_seconds(config, data)
    bf16 = _step_seconds(
        config.model_copy(update={"train": config.train.model_copy(update={"precision": "bf16"})}), data
    )
    return {
        "dataset": dataset,
        "samples_per_s": round(result["samples_per_s"], 1),
        "auc": round(test["AUC"], 4),
        "logloss": round(test["LogLoss"], 4),
        "gauc": round(test["gAUC"], 4),
        "best_epoch": result["best_epoch"],
        "train_seconds": result["seconds"],
        "bf16_vs_fp32_step_time": round(bf16 / fp32, 2),
    }


BENCHMARKS = {
    "prepare": bench_prepare,
    "lens": bench_lens,
    "scoring": bench_scoring,
    "ranking": bench_ranking,
    "train-step": bench_train_step,
    "personalized": bench_personalized,
}


def run_benchmark(name: str, quick: bool, dataset: str | None, results_dir: Path, log=print) -> dict:
    if name not in BENCHMARKS:
        raise LifeloraError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    figures = {"quick": quick, **BENCHMARKS[name](quick, dataset, log)}
    path = results_dir / f"{name}.json"
    history = json.loads(path.read_text()) if path.is_file() else []
    history.append(
        {
            "command": " ".join(
                ["lifelora", "bench", name, *(["--quick"] if quick else [])]
                + ([f"--dataset {dataset}"] if dataset else [])
            ),
            "machine": machine(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "figures": figures,
        }
    )
    write_json(path, history)
    return figures
