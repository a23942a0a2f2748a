"""`lifelora bench prepare`: ReLLa preparation from raw files to saved Parquet, in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

from lifelora.errors import LifeloraError

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
