"""`lifelora demo`: the main job on the embedded default data, end to end, in a few minutes on a CPU."""

from __future__ import annotations

from pathlib import Path

from lifelora.data.prepare import PRESETS, prepare, prepared_dir, save_prepared
from lifelora.data.prepared import PreparedData
from lifelora.data.registry import load_raw
from lifelora.io import write_json
from lifelora.lens.config import LensConfig
from lifelora.lens.train import train_run
from lifelora.report import markdown_table, metrics_table, print_table
from lifelora.run import new_run_dir, record_run

DATASET = "ml-100k"
MODELS = {
    "DIN": {},
    "DIN w/o history ratings": {"model": {"use_ratings": False}},
}


def ensure_prepared(dataset: str, preset: str = "rella") -> PreparedData:
    directory = prepared_dir(dataset, preset)
    if not (directory / "meta.json").is_file():
        save_prepared(prepare(load_raw(dataset), PRESETS[preset]), directory)
    return PreparedData.load(directory)


def run_demo(quick: bool = False, run_dir: Path | None = None, log=print) -> list[tuple[str, dict]]:
    log(f"preparing {DATASET} (embedded copy, preset rella)")
    data = ensure_prepared(DATASET)
    run_dir = run_dir or new_run_dir("demo", DATASET)
    rows = []
    for name, settings in MODELS.items():
        train = {"max_epochs": 1, "max_train_samples": 20_000} if quick else {}
        config = LensConfig.model_validate({"dataset": DATASET, **settings, "train": train})
        model_dir = run_dir / name.lower().replace(" ", "-").replace("/", "")
        model_dir.mkdir(parents=True, exist_ok=True)
        record_run(model_dir, config, f"lifelora demo{' --quick' if quick else ''}")
        log(f"training {name}")
        result = train_run(config, data, model_dir, log=log)
        rows.append((name, result["metrics"]["test"]))
    title = f"{DATASET} test split ({data.meta['stats']['test']['samples']:,} samples)"
    print_table(metrics_table(title, rows))
    (run_dir / "results.md").write_text(f"# {title}\n\n" + markdown_table(rows))
    write_json(run_dir / "results.json", dict(rows))
    log(f"run directory: {run_dir}")
    return rows
