"""Named benchmarks (`lifelora bench NAME`), one module each: figures as JSON, appended to
`results_dir/NAME.json` with the command, the machine and the date.

The figures carry the 1-minute load average before and after the run (`load_avg_1m`): ratios are
alternated pairs and hold while load comes and goes, but on a machine busier than its cores every
multi-threaded op also waits on threads the other jobs descheduled, which inflates whichever contender
runs more ops. A start well below `cpu_count` marks a quiet run; the end includes this run's own threads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lifelora.bench.continual import bench_continual
from lifelora.bench.decoding import bench_decoding
from lifelora.bench.lens import bench_lens
from lifelora.bench.personalized import bench_personalized
from lifelora.bench.prepare import bench_prepare
from lifelora.bench.ranking import bench_ranking
from lifelora.bench.sasrec import bench_sasrec
from lifelora.bench.scoring import bench_scoring
from lifelora.bench.train_layout import bench_train_layout
from lifelora.bench.train_step import bench_train_step
from lifelora.errors import LifeloraError
from lifelora.io import write_json
from lifelora.run import environment

BENCHMARKS = {
    "prepare": bench_prepare,
    "lens": bench_lens,
    "scoring": bench_scoring,
    "ranking": bench_ranking,
    "train-step": bench_train_step,
    "train-layout": bench_train_layout,
    "personalized": bench_personalized,
    "decoding": bench_decoding,
    "sasrec": bench_sasrec,
    "continual": bench_continual,
}


def run_benchmark(name: str, quick: bool, dataset: str | None, results_dir: Path, log=print) -> dict:
    if name not in BENCHMARKS:
        raise LifeloraError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    load_start = os.getloadavg()[0]
    measured = BENCHMARKS[name](quick, dataset, log)
    load = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    figures = {"quick": quick, "load_avg_1m": load, **measured}
    path = results_dir / f"{name}.json"
    history = json.loads(path.read_text()) if path.is_file() else []
    machine = environment()
    history.append(
        {
            "command": " ".join(
                ["lifelora", "bench", name, *(["--quick"] if quick else [])]
                + ([f"--dataset {dataset}"] if dataset else [])
            ),
            "date": machine.pop("date"),
            "machine": machine,
            "figures": figures,
        }
    )
    write_json(path, history)
    return figures
