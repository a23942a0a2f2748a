#!/usr/bin/env bash
# The demo's code settings checked on validation, not on the test figures they were first picked on:
# the demo's shared LoRA (sequence layout) trained for the same minutes under each setting, then
# decoded for every ML-100K user's validation target (the second-to-last item; its test item never
# trains), seen items removed. Items are coded from the committed SASRec of the equal-time experiment
# (trained on the training split only). Resumable: a setting with a metrics.json is skipped.
# Usage: benchmarks/next_item_codes_on_validation.sh [MINUTES] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
LIFELORA=${LIFELORA:-.venv/bin/lifelora}
MINUTES=${1:-4}
OUT=${2:-benchmarks/results/next-item-codes-valid}
LENS=benchmarks/results/next-item-equal-time/sasrec
mkdir -p "$OUT"

declare -A SETTINGS=(
  [l1x64-codebook-level]="semantic_ids.levels=1 semantic_ids.codebook_size=64"
  [l1x128-codebook-level]="semantic_ids.levels=1 semantic_ids.codebook_size=128"
  [l3x32-codebook-level]="semantic_ids.levels=3 semantic_ids.codebook_size=32"
  [l1x64-codebook-trie]="semantic_ids.levels=1 semantic_ids.codebook_size=64 prompt.normalise=trie"
)
for name in l1x64-codebook-level l1x128-codebook-level l3x32-codebook-level l1x64-codebook-trie; do
  [ -f "$OUT/$name/metrics.json" ] && continue
  rm -rf "$OUT/$name"
  # shellcheck disable=SC2086
  $LIFELORA train -c configs/next_item/lora-ml100k-demo.yaml --run-dir "$OUT/$name" \
    semantic_ids.lens="$LENS" eval.split=valid subset.eval=null train.max_minutes="$MINUTES" ${SETTINGS[$name]}
done

.venv/bin/python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

import numpy as np
import polars as pl

from lifelora.metrics.intervals import mean_interval, paired_mean_difference
from lifelora.metrics.ranking import NOT_FOUND, metric_gains

out = Path(sys.argv[1])
chosen = "l1x64-codebook-level"  # the demo's setting, against which every other one is paired


def gains(name: str) -> np.ndarray:
    ranked = pl.read_parquet(out / name / "ranked_valid.parquet").sort("user_idx")
    return metric_gains(ranked["rank"].fill_null(NOT_FOUND).to_numpy(), "ndcg@10")


rows = [
    "| setting | tokens per item | steps | valid hit@10 | valid ndcg@10 [95% CI] | − demo's setting [95% CI] |",
    "|---|---|---|---|---|---|",
]
for path in sorted(out.glob("*/metrics.json")):
    name, m = path.parent.name, json.loads(path.read_text())
    mean, low, high = mean_interval(gains(name))
    paired = "" if name == chosen else "{difference:+.4f} [{low:+.4f}, {high:+.4f}]".format(
        **paired_mean_difference(gains(name), gains(chosen))
    )
    rows.append(
        f"| {name} | {len(m['codes']['level_sizes'])} | {m['train']['steps']} "
        f"| {m['metrics']['valid']['hit@10']:.4f} | {mean:.4f} [{low:.4f}, {high:.4f}] | {paired} |"
    )
(out / "results.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
