"""`lifelora demo`: the main job on the embedded default data and model, end to end, on a CPU.

ML-100K is prepared; the lens (DIN, with and without history ratings) is trained on the full training
split; the SmolLM2 backbone is scored zero-shot, with a shared LoRA and with RecLoRA's personalized
adapter routed by the frozen DIN (Few2Many), both trained on the same few-shot subset. The LLM rows
and a DIN row are measured on the same fixed test subset, so they compare directly.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lifelora.config import load_config, shipped_config
from lifelora.data.prepared import PreparedData
from lifelora.data.store import open_prepared
from lifelora.io import write_json
from lifelora.lens.config import LensConfig
from lifelora.lens.train import train_lens
from lifelora.metrics.ctr import ctr_metrics
from lifelora.report import CTR_COLUMNS, markdown_table, metrics_table, print_table
from lifelora.run import new_run_dir, record_run

DATASET = "ml-100k"
# (row name, shipped config, overrides); a lens's run directory is named after its row
LENSES = (
    ("DIN", "lens/din-ml100k.yaml", []),
    ("DIN w/o history ratings", "lens/din-ml100k.yaml", ["model.use_ratings=false"]),
)
SHARED_LORA_CONFIG = "llm/lora-ml100k-demo.yaml"
RECLORA_CONFIG = "llm/reclora-ml100k-demo.yaml"
QUICK_LENS = ["train.epochs=1", "train.max_train_samples=20000"]
QUICK_LLM = ["subset.train=16", "subset.eval=48", "prompt.history=3"]


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-").replace("/", "")


def _lens_rows(data: PreparedData, run_dir: Path, quick: bool, command: str, log) -> list[tuple[str, dict]]:
    rows = []
    for name, config_name, overrides in LENSES:
        config = load_config(
            LensConfig, shipped_config(config_name), [*overrides, *(QUICK_LENS if quick else [])]
        )
        model_dir = run_dir / _slug(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        record_run(model_dir, config, command)
        log(f"training {name}")
        result = train_lens(config, data, model_dir, log=log)
        rows.append((name, {"samples": data.meta["stats"]["test"]["samples"], **result["metrics"]["test"]}))
    return rows


def _llm_rows(data: PreparedData, run_dir: Path, quick: bool, command: str, log) -> list[tuple[str, dict]]:
    from lifelora.tasks.ctr.config import CTRConfig
    from lifelora.tasks.ctr.jobs import evaluate_run, train_and_evaluate
    from lifelora.tasks.ctr.task import CTRTask

    quick_overrides = QUICK_LLM if quick else []
    lora_cfg = load_config(CTRConfig, shipped_config(SHARED_LORA_CONFIG), quick_overrides)
    zero_cfg = lora_cfg.model_copy(update={"adapter": None})
    reclora_cfg = load_config(
        CTRConfig, shipped_config(RECLORA_CONFIG), [*quick_overrides, f"lens={run_dir / 'din'}"]
    )
    task = CTRTask(data, lora_cfg.model, log=log)
    zero_dir, lora_dir, reclora_dir = run_dir / "zero-shot", run_dir / "shared-lora", run_dir / "reclora"
    for directory, cfg in ((zero_dir, zero_cfg), (lora_dir, lora_cfg), (reclora_dir, reclora_cfg)):
        directory.mkdir(parents=True, exist_ok=True)
        record_run(directory, cfg, command)
    log(f"scoring {zero_cfg.subset.eval} test samples zero-shot with {zero_cfg.model}")
    zero = evaluate_run(task, zero_cfg, zero_dir)["metrics"]["test"]
    lora = train_and_evaluate(task, lora_cfg, lora_dir)["metrics"]["test"]
    reclora = train_and_evaluate(task, reclora_cfg, reclora_dir)["metrics"]["test"]
    name, n = zero_cfg.model, lora_cfg.subset.train
    return [
        (f"{name} zero-shot", zero),
        (f"{name} + shared LoRA ({n} train samples)", lora),
        (f"{name} + RecLoRA, DIN-routed ({n} train samples)", reclora),
    ]


def _lens_on_subset(run_dir: Path, lens_name: str, llm_dir: Path) -> dict:
    """The lens's metrics on exactly the rows the LLM rows were scored on."""
    lens_dir = run_dir / _slug(lens_name)
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
        print_table(metrics_table(title, rows, CTR_COLUMNS))
    (run_dir / "results.md").write_text(
        "".join(f"## {title}\n\n{markdown_table(rows, CTR_COLUMNS)}\n" for title, rows in tables.items())
    )
    results = {name: metrics for rows in tables.values() for name, metrics in rows}
    write_json(run_dir / "results.json", results)
    log(f"run directory: {run_dir}")
    return results
