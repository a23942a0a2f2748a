#!/usr/bin/env bash
# Every row of the PESO-release table (BENCHMARKS.md, "PESO on its released Video Games blocks"), in the
# order they matter, into the committed run directory. Resumable at any point: a finished strategy and
# seed is skipped, an unfinished one goes on from its last finished block (or retrains what a fresh clone
# lacks, seeded, to the same weights). Commit the directory's results as they come (adapters are ignored).
# ~35 min per strategy and seed, ~30 min for a seed's D1, on two AVX2 cores; the whole list ~10 h.
# Usage: benchmarks/peso_release_video_games.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
LIFELORA=${LIFELORA:-.venv/bin/lifelora}
RUN=${1:-benchmarks/results/peso-release-video-games}
RELEASE=../shared/data/peso-release/Video_Games_cl_0.6_0_5_3_0

$LIFELORA data info video-games >/dev/null 2>&1 || $LIFELORA data prepare video-games --source "$RELEASE"
if [ ! -f "$RUN/config.yaml" ]; then
  $LIFELORA continual run -c continual/peso-release-video-games.yaml --run-dir "$RUN" \
    --strategies pretrain,single-lora,peso-2 --seeds 1
fi
step() { $LIFELORA continual run --resume "$RUN" --strategies "$1" --seeds "$2" && $LIFELORA continual report "$RUN"; }
step pretrain,single-lora,peso-2,l2,l2-release,peso-sized-2 1
step peso-0.5,peso-8 1                         # λ chosen on validation among 0.5, 2, 8
step pretrain,single-lora,peso-2,l2 2          # three seeds for the rows the issue names
step pretrain,single-lora,peso-2,l2 3
step replay,sumlora,sdlora,inflora,olora 1     # the other baselines, one seed
# the row no paper has: PESO on the personalized bank with an evolving SASRec lens (and the bank without it)
[ -d runs/sasrec-video-games ] || $LIFELORA lens train -c lens/sasrec-video-games.yaml --run-dir runs/sasrec-video-games
if [ -f "$RUN-personalized/config.yaml" ]; then
  $LIFELORA continual run --resume "$RUN-personalized" --seeds 1
else
  $LIFELORA continual run -c continual/peso-release-video-games-personalized.yaml --run-dir "$RUN-personalized" --seeds 1
fi
$LIFELORA continual report "$RUN-personalized"
