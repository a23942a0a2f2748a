"""`lifelora bench ranking`: 20 candidates per user scored as independent prompts against the shared
prompt prefix computed once."""

from __future__ import annotations

import time

import numpy as np

from lifelora.bench.timing import bench_backbone


def _ranking_times(backbone, data, layout: str, users: list[int], n_candidates: int, history: int) -> dict:
    from lifelora.tasks.ctr.prompts import PromptBuilder
    from lifelora.tasks.ctr.scoring import score_candidates, score_prompts

    builder = PromptBuilder(backbone.tokenizer, data.name, data.users, data.items, layout=layout)
    rng = np.random.default_rng(0)
    pad, answers = backbone.tokenizer.pad_token_id, builder.answer_ids
    independent_s = shared_s = max_diff = 0.0
    prefix_len, suffix_len = [], []
    for user in users:
        row = data.users.row(user, named=True)
        seq = data.sequences.slice(row["seq_offset"] + row["seq_len"] - history, history)
        prefix = builder.encode_prefixes(
            np.array([user]), [seq["item_idx"].to_numpy()], [seq["rating"].to_numpy()]
        )[0]
        candidates = rng.choice(len(data.items), n_candidates, replace=False)
        continuations = [t + builder.suffix_ids for t in builder.encode_targets(candidates)]
        prefix_len.append(len(prefix))
        suffix_len.extend(len(c) for c in continuations)
        start = time.perf_counter()
        full = score_prompts(
            backbone.model,
            [prefix + c for c in continuations],
            pad,
            answers,
            batch_size=n_candidates,
            precision="fp32",
            progress=False,
        )
        independent_s += time.perf_counter() - start
        start = time.perf_counter()
        fast = score_candidates(
            backbone.model, prefix, continuations, pad, answers, batch_size=n_candidates, precision="fp32"
        )
        shared_s += time.perf_counter() - start
        max_diff = max(max_diff, float(np.abs(full - fast).max()))
    per_candidate = 1000 / (len(users) * n_candidates)
    return {
        "speedup": round(independent_s / shared_s, 2),
        "max_abs_diff": max_diff,
        "mean_prefix_tokens": round(float(np.mean(prefix_len)), 1),
        "mean_candidate_tokens": round(float(np.mean(suffix_len)), 1),
        "independent_ms_per_candidate": round(independent_s * per_candidate, 1),
        "shared_ms_per_candidate": round(shared_s * per_candidate, 1),
    }


def bench_ranking(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    """20 candidates per user: 20 independent prompts (batched) vs the shared prefix computed once, in
    the default `target-last` layout and in ReLLa's exact order (longer per-candidate suffix)."""
    from lifelora.data.store import open_prepared

    backbone, _ = bench_backbone(model, log)
    data = open_prepared(dataset or "ml-100k", prepare_missing=True)
    users = [0] if quick else [0, 1, 2]
    log(f"ranking 20 candidates for {len(users)} user(s) with {backbone.name}, fp32")
    target_last = _ranking_times(backbone, data, "target-last", users, 20, 10)
    rella = _ranking_times(backbone, data, "rella", users, 20, 10)
    return {
        "model": backbone.name,
        "users": len(users),
        "candidates": 20,
        "precision": "fp32",
        **target_last,
        "max_abs_diff": max(target_last["max_abs_diff"], rella["max_abs_diff"]),
        "rella_layout": {k: v for k, v in rella.items() if k != "max_abs_diff"},
    }
