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
from lifelora.lens.din.config import LensConfig
from lifelora.lens.din.train import train_lens
from lifelora.metrics.ctr import ctr_metrics
from lifelora.metrics.intervals import auc_interval, paired_auc_difference
from lifelora.report import markdown_table, metrics_table, paired_verdict, plot_bars, print_table
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
QUICK_LLM = ["subset.train=8", "subset.eval=24", "prompt.history=3"]
LLM_ROW_DIRS = ("zero-shot", "shared-lora", "reclora")
INTERVAL = "AUC 95% CI"
COLUMNS = ("samples", "AUC", INTERVAL, "gAUC", "LogLoss", "ACC")


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
    from lifelora.tasks.ctr.task import CTRTask
    from lifelora.tasks.jobs import evaluate_run, train_and_evaluate

    quick_overrides = QUICK_LLM if quick else []
    lora_cfg = load_config(CTRConfig, shipped_config(SHARED_LORA_CONFIG), quick_overrides)
    zero_cfg = lora_cfg.model_copy(update={"adapter": None})
    reclora_cfg = load_config(
        CTRConfig, shipped_config(RECLORA_CONFIG), [*quick_overrides, f"lens={run_dir / 'din'}"]
    )
    task = CTRTask(data, lora_cfg.model, log=log)
    zero_dir, lora_dir, reclora_dir = (run_dir / name for name in LLM_ROW_DIRS)
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


def _predictions(run_dir: Path, row_dir: str, on: pl.DataFrame | None = None) -> pl.DataFrame:
    """A row's test predictions (sample_id, label, score), restricted to the samples of `on`."""
    scored = pl.read_parquet(run_dir / row_dir / "predictions_test.parquet").select(
        "sample_id", "label", "score"
    )
    return scored if on is None else on.select("sample_id", "user_idx").join(scored, on="sample_id")


def _with_interval(metrics: dict, scored: pl.DataFrame) -> dict:
    _, low, high = auc_interval(scored["label"].to_numpy(), scored["score"].to_numpy())
    return {**metrics, "AUC_low": low, "AUC_high": high, INTERVAL: f"{low:.3f}–{high:.3f}"}


def _lens_on_subset(run_dir: Path, subset: pl.DataFrame) -> dict:
    """The lens's metrics on exactly the rows the LLM rows were scored on."""
    scored = _predictions(run_dir, "din", on=subset)
    metrics = ctr_metrics(
        scored["label"].to_numpy(), scored["score"].to_numpy(), scored["user_idx"].to_numpy()
    )
    return _with_interval({"samples": scored.height, **metrics}, scored)


def _verdict(run_dir: Path) -> tuple[str, dict]:
    """RecLoRA against shared LoRA on the same rows: DeLong's paired test, said in words."""
    lora, reclora = _predictions(run_dir, "shared-lora"), _predictions(run_dir, "reclora")
    paired = reclora.join(lora, on="sample_id", suffix="_lora")
    test = paired_auc_difference(
        paired["label"].to_numpy(), paired["score"].to_numpy(), paired["score_lora"].to_numpy()
    )
    diff, low, high = test["difference"], test["low"], test["high"]
    span = (
        f"RecLoRA − shared LoRA AUC {diff:+.3f} (95% CI {low:+.3f} to {high:+.3f}, p = {test['p_value']:.3f})"
    )
    return paired_verdict(span, test, "RecLoRA", "shared LoRA", "at this budget, on these rows"), test


def run_demo(quick: bool = False, run_dir: Path | None = None, log=print) -> dict[str, dict]:
    command = f"lifelora demo{' --quick' if quick else ''}"
    log(f"preparing {DATASET} (embedded copy, preset rella)")
    data = open_prepared(DATASET, prepare_missing=True)
    run_dir = run_dir or new_run_dir("demo", DATASET)
    lens_rows = [
        (name, _with_interval(metrics, _predictions(run_dir, _slug(name))))
        for name, metrics in _lens_rows(data, run_dir, quick, command, log)
    ]
    llm_rows = [
        (name, _with_interval(metrics, _predictions(run_dir, row_dir)))
        for (name, metrics), row_dir in zip(
            _llm_rows(data, run_dir, quick, command, log), LLM_ROW_DIRS, strict=True
        )
    ]
    subset = pl.read_parquet(run_dir / "zero-shot" / "predictions_test.parquet")
    subset_rows = [("DIN (same rows)", _lens_on_subset(run_dir, subset)), *llm_rows]
    verdict, paired = _verdict(run_dir)
    tables = {
        f"{DATASET} test split, lens trained on the full training split": lens_rows,
        f"{DATASET} fixed test subset (seed 42): lens vs LLM": subset_rows,
    }
    for title, rows in tables.items():
        print_table(metrics_table(title, rows, COLUMNS))
    log(verdict)
    title = f"{DATASET}: AUC on the same {subset.height} test rows, with DeLong 95% intervals"
    chart = plot_bars(subset_rows, run_dir / "results.png", title, interval=("AUC_low", "AUC_high"))
    (run_dir / "results.md").write_text(
        "".join(f"## {title}\n\n{markdown_table(rows, COLUMNS)}\n" for title, rows in tables.items())
        + f"{verdict}\n\n![AUC with 95% intervals](results.png)\n"
    )
    results = {name: metrics for rows in tables.values() for name, metrics in rows}
    write_json(run_dir / "results.json", {**results, "RecLoRA vs shared LoRA": paired})
    log(f"comparison chart: {chart}")
    log(f"run directory: {run_dir}")
    return results
