"""`lifelora bench ranking`: 20 candidates per user scored as independent prompts against the shared
prompt prefix computed once, the two alternated."""

from __future__ import annotations

import itertools

import numpy as np

from lifelora.bench.timing import alternate, bench_backbone

PRECISION = "fp32"  # the two ways agree to fp32 rounding (max_abs_diff); bf16 rounding would blur that check


def _ranking_times(backbone, data, layout: str, users: list[int], n_candidates: int, pairs: int) -> dict:
    """Independent ÷ shared-prefix seconds over `pairs` pairs; each call scores the next user in turn, so
    the two sides of a pair score the same user (the warm-up takes the first)."""
    from lifelora.tasks.ctr.prompts import PromptBuilder
    from lifelora.tasks.ctr.scoring import score_candidates, score_prompts

    builder = PromptBuilder(backbone.tokenizer, data.name, data.users, data.items, layout=layout)
    rng = np.random.default_rng(0)
    pad, answers = backbone.tokenizer.pad_token_id, builder.answer_ids
    prompts = []
    for user in users:
        row = data.users.row(user, named=True)
        seq = data.sequences.slice(row["seq_offset"] + row["seq_len"] - 10, 10)
        candidates = rng.choice(len(data.items), n_candidates, replace=False)
        prompts.append(
            builder.encode_candidates(user, seq["item_idx"].to_numpy(), seq["rating"].to_numpy(), candidates)
        )
    scores: dict[str, list[np.ndarray]] = {"independent": [], "shared": []}
    turns = {side: itertools.cycle(prompts) for side in scores}

    def independent():
        prefix, continuations = next(turns["independent"])
        scores["independent"].append(
            score_prompts(
                backbone.model,
                [prefix + c for c in continuations],
                pad,
                answers,
                batch_size=n_candidates,
                precision=PRECISION,
                progress=False,
            )
        )

    def shared():
        prefix, continuations = next(turns["shared"])
        scores["shared"].append(
            score_candidates(
                backbone.model,
                prefix,
                continuations,
                pad,
                answers,
                batch_size=n_candidates,
                precision=PRECISION,
            )
        )

    figure = alternate(independent, shared, pairs, ("independent", "shared"))
    max_diff = max(
        float(np.abs(a - b).max()) for a, b in zip(scores["independent"], scores["shared"], strict=True)
    )
    return {
        "speedup": figure,
        "max_abs_diff": max_diff,
        "mean_prefix_tokens": round(float(np.mean([len(p) for p, _ in prompts])), 1),
        "mean_candidate_tokens": round(float(np.mean([len(c) for _, cs in prompts for c in cs])), 1),
        "independent_ms_per_candidate": round(figure["independent_s"] * 1000 / n_candidates, 1),
        "shared_ms_per_candidate": round(figure["shared_s"] * 1000 / n_candidates, 1),
    }


def bench_ranking(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    """20 candidates per user (6 with `quick`): independent prompts (batched) vs the shared prefix computed once, in
    the default `target-last` layout and in ReLLa's exact order (longer per-candidate suffix)."""
    from lifelora.data.store import open_prepared

    backbone, _ = bench_backbone(model, log)
    data = open_prepared(dataset or "ml-100k", prepare_missing=True)
    # quick: one pair per layout over 6 candidates, a smoke run of the same code in ~half a minute
    users, pairs, n = ([0], 1, 6) if quick else ([0, 1, 2], 3, 20)
    log(f"ranking {n} candidates for {len(users)} user(s) with {backbone.name}, {PRECISION}, {pairs} pairs")
    target_last = _ranking_times(backbone, data, "target-last", users, n, pairs)
    rella = _ranking_times(backbone, data, "rella", users, n, pairs)
    return {
        "model": backbone.name,
        "users": len(users),
        "candidates": n,
        "precision": PRECISION,
        **target_last,
        "max_abs_diff": max(target_last["max_abs_diff"], rella["max_abs_diff"]),
        "rella_layout": {k: v for k, v in rella.items() if k != "max_abs_diff"},
    }
