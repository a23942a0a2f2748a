#!/usr/bin/env bash
# Re-run every benchmark quoted in BENCHMARKS.md; each appends to benchmarks/results/NAME.json.
# Run on a quiet machine: figures from a loaded machine are not comparable.
set -euo pipefail
cd "$(dirname "$0")/.."
LIFELORA=${LIFELORA:-.venv/bin/lifelora}
$LIFELORA bench prepare                      # ML-1M preparation: seconds, peak_rss_gb
$LIFELORA bench lens                         # ML-100K lens: samples_per_s, auc, logloss, bf16 ratio
$LIFELORA bench lens --dataset ml-1m         # ML-1M lens (about 20 minutes on 2 cores)
$LIFELORA lens train -c configs/lens/din-ml1m-no-ratings.yaml   # the ratings ablation
$LIFELORA bench scoring                      # SmolLM2: logits_to_keep=1 + auto precision vs naive fp32
$LIFELORA bench ranking                      # 20 candidates: shared prefix vs independent prompts
$LIFELORA bench train-step                   # SmolLM2 + LoRA step: samples/s, memory, bf16 ÷ fp32
$LIFELORA bench train-layout                 # next-item targets/s: sequence vs prompt layout (SmolLM2)
$LIFELORA bench personalized                  # meta-LoRA bank vs shared LoRA: layer, step, vs per-sample loop
$LIFELORA bench decoding                     # trie beam search vs generate + prefix_allowed_tokens_fn, exact ranking
$LIFELORA bench sasrec                       # SASRec epoch time and NDCG@10 on ML-1M
$LIFELORA bench continual                    # PESO step ÷ single evolving LoRA step, both proximal forms, memory
