#!/usr/bin/env bash
# Every row of the PESO-release table (BENCHMARKS.md, "PESO on its released Video Games blocks"), in the
# order they matter, into the committed run directory. Resumable at any point: a finished strategy and
# seed is skipped, an unfinished one goes on from its last finished block. Results travel without
# adapters, and seeded retraining repeats a model only on the kind of machine that first trained it, so a
# step that would retrain another kind's D1 or blocks is refused in one line (each period's done.json
# names its machine) and the script goes on to the next step. Every row trains in fp32, whatever `auto`
# would pick here, so that rows from different CPUs differ only as seeds and kernels do.
# Commit the directory's results as they come (adapters are ignored).
# Per strategy and seed ~33 min on two AVX2 cores (~21 min on an AVX512/AMX Xeon, fp32; the branch-per-block
# ones, whose forward passes grow with the blocks, 32–38 min there), a seed's D1 ~30 (~14).
# Usage: [SECONDARY_SEED=N] benchmarks/peso_release_video_games.sh [RUN_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
LIFELORA=${LIFELORA:-.venv/bin/lifelora}
RUN=${1:-benchmarks/results/peso-release-video-games}
RELEASE=../shared/data/peso-release/Video_Games_cl_0.6_0_5_3_0

$LIFELORA data info video-games >/dev/null 2>&1 || $LIFELORA data prepare video-games --source "$RELEASE" || exit 1
if [ ! -f "$RUN/config.yaml" ]; then
  $LIFELORA continual run -c continual/peso-release-video-games.yaml --run-dir "$RUN" \
    --strategies pretrain,single-lora,peso-2 --seeds 1 train.precision=fp32 || exit 1
fi
step() {
  $LIFELORA continual run --resume "$RUN" --strategies "$1" --seeds "$2" train.precision=fp32 \
    && $LIFELORA continual report "$RUN" || echo "step '$1' seed $2 did not finish; going on" >&2
}
step pretrain,single-lora,peso-2,l2,l2-release,peso-sized-2 1
step peso-0.5,peso-8 1                         # λ chosen on validation among 0.5, 2, 8, seed by seed
step pretrain,single-lora,peso-2,peso-0.5,peso-8,l2 2   # three seeds for the rows the issue names
step pretrain,single-lora,peso-2,peso-0.5,peso-8,l2 3
# the other baselines, one seed: seed 2 (begun on the Xeon); SECONDARY_SEED picks another
step replay,sumlora,sdlora,inflora,olora "${SECONDARY_SEED:-2}"
# the row no paper has: PESO on the personalized bank with an evolving SASRec lens (and the bank without it)
if [ -f "$RUN-personalized/config.yaml" ]; then
  $LIFELORA continual run --resume "$RUN-personalized" --seeds 1 train.precision=fp32
else
  $LIFELORA continual run -c continual/peso-release-video-games-personalized.yaml --run-dir "$RUN-personalized" \
    --seeds 1 train.precision=fp32
fi
$LIFELORA continual report "$RUN-personalized"
