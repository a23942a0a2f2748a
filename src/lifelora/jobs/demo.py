"""`lifelora demo`: the main job on the embedded default data and model, end to end, on a CPU.

ML-100K is prepared; the lens (DIN, with and without history ratings) is trained on the full training
split; the SmolLM2 backbone is scored zero-shot, with a shared LoRA and with RecLoRA's personalized
adapter routed by the frozen DIN (Few2Many), both trained on the same few-shot subset. The LLM rows
and a DIN row are measured on the same fixed test subset, so they compare directly.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lifelora.data.prepared import PreparedData
from lifelora.data.store import open_prepared
from lifelora.io import write_json
from lifelora.lens.config import LensConfig
from lifelora.lens.train import train_run
from lifelora.metrics.ctr import ctr_metrics
from lifelora.report import markdown_table, metrics_table, print_table
from lifelora.run import new_run_dir, record_run

DATASET = "ml-100k"
LENSES = {
    "DIN": {},
    "DIN w/o history ratings": {"model": {"use_ratings": False}},
}
# mirrored by configs/llm/lora-ml100k-demo.yaml (a test keeps the two equal)
LLM_SETTINGS = {
    "dataset": DATASET,
    "prompt": {"history": 5},
    "subset": {"train": 128, "eval": 200, "seed": 42},
    "train": {"batch_size": 8, "grad_accum": 2, "checkpoint_every": 50},
    "eval": {"batch_size": 16},
}
# RecLoRA on the same subset, routed by the demo's DIN (configs/llm/reclora-ml100k-demo.yaml)
RECLORA_ADAPTER = {"kind": "personalized", "n_loras": 16, "temperature": 5.0, "mixing": "factors"}
QUICK_LLM = {"subset": {"train": 16, "eval": 48, "seed": 42}, "prompt": {"history": 3}}
COLUMNS = ("samples", "AUC", "gAUC", "LogLoss", "ACC")


def _merge(base: dict, extra: dict) -> dict:
    return {k: {**base.get(k, {}), **v} if isinstance(v, dict) else v for k, v in {**base, **extra}.items()}


def _lens_rows(data: PreparedData, run_dir: Path, quick: bool, command: str, log) -> list[tuple[str, dict]]:
    rows = []
    for name, settings in LENSES.items():
        train = {"max_epochs": 1, "max_train_samples": 20_000} if quick else {}
        config = LensConfig.model_validate({"dataset": DATASET, **settings, "train": train})
        model_dir = run_dir / name.lower().replace(" ", "-").replace("/", "")
        model_dir.mkdir(parents=True, exist_ok=True)
        record_run(model_dir, config, command)
        log(f"training {name}")
        result = train_run(config, data, model_dir, log=log)
        rows.append((name, {"samples": data.meta["stats"]["test"]["samples"], **result["metrics"]["test"]}))
    return rows


def _llm_rows(data: PreparedData, run_dir: Path, quick: bool, command: str, log) -> list[tuple[str, dict]]:
    from lifelora.tasks.ctr.config import CTRConfig
    from lifelora.tasks.ctr.jobs import CTRSetup, evaluate_ctr, train_ctr

    settings = _merge(LLM_SETTINGS, QUICK_LLM) if quick else LLM_SETTINGS
    lora_cfg = CTRConfig.model_validate(settings)
    zero_cfg = lora_cfg.model_copy(update={"adapter": None})
    reclora_cfg = CTRConfig.model_validate(
        {**settings, "adapter": RECLORA_ADAPTER, "lens": str(run_dir / "din")}
    )
    setup = CTRSetup(zero_cfg, data, log=log)
    zero_dir, lora_dir, reclora_dir = run_dir / "zero-shot", run_dir / "shared-lora", run_dir / "reclora"
    for directory, cfg in ((zero_dir, zero_cfg), (lora_dir, lora_cfg), (reclora_dir, reclora_cfg)):
        directory.mkdir(parents=True, exist_ok=True)
        record_run(directory, cfg, command)
    log(f"scoring {zero_cfg.subset.eval} test samples zero-shot with {zero_cfg.model}")
    zero = evaluate_ctr(setup, zero_dir)["metrics"]["test"]
    setup.configure(lora_cfg)
    lora = train_ctr(setup, lora_dir)["metrics"]["test"]
    setup.configure(reclora_cfg)
    reclora = train_ctr(setup, reclora_dir)["metrics"]["test"]
    name, n = zero_cfg.model, lora_cfg.subset.train
    return [
        (f"{name} zero-shot", zero),
        (f"{name} + shared LoRA ({n} train samples)", lora),
        (f"{name} + RecLoRA, DIN-routed ({n} train samples)", reclora),
    ]


def _lens_on_subset(run_dir: Path, lens_name: str, llm_dir: Path) -> dict:
    """The lens's metrics on exactly the rows the LLM rows were scored on."""
    lens_dir = run_dir / lens_name.lower().replace(" ", "-")
    rows = pl.read_parquet(llm_dir / "predictions_test.parquet").select("sample_id", "user_idx")
    scored = rows.join(pl.read_parquet(lens_dir / "predictions_test.parquet"), on="sample_id")
    metrics = ctr_metrics(
        scored["label"].to_numpy(), scored["score"].to_numpy(), scored["user_idx"].to_numpy()
    )
    return {"samples": scored.height, **metrics}


def run_demo(quick: bool = False, run_dir: Path | None = None, log=print) -> dict[str, dict]:
    command = f"lifelora demo{' --quick' if quick else ''}"
    log(f"preparing {DATASET} (embedded copy, preset rella)")
    data = open_prepared(DATASET, prepare_missing=True)
    run_dir = run_dir or new_run_dir("demo", DATASET)
    lens_rows = _lens_rows(data, run_dir, quick, command, log)
    llm_rows = _llm_rows(data, run_dir, quick, command, log)
    subset_rows = [("DIN (same rows)", _lens_on_subset(run_dir, "DIN", run_dir / "zero-shot")), *llm_rows]
    tables = {
        f"{DATASET} test split, lens trained on the full training split": lens_rows,
        f"{DATASET} fixed test subset (seed 42): lens vs LLM": subset_rows,
    }
    for title, rows in tables.items():
        print_table(metrics_table(title, rows, COLUMNS))
    (run_dir / "results.md").write_text(
        "".join(f"## {title}\n\n{markdown_table(rows, COLUMNS)}\n" for title, rows in tables.items())
    )
    results = {name: metrics for rows in tables.values() for name, metrics in rows}
    write_json(run_dir / "results.json", results)
    log(f"run directory: {run_dir}")
    return results
