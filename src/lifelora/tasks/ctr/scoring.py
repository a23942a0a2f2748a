"""P(yes) for CTR prompts, and candidate ranking that computes a user's shared prompt prefix once.

Only the answer position's logits are asked for (`logits_to_keep=1`), never the full-vocabulary
logits of every position; prompts are left-padded so the answer position is the last column.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lifelora.distributed import map_batches, my_batches
from lifelora.llm.batching import left_pad, positions_of
from lifelora.llm.logits import last_logits
from lifelora.precision import autocast


def answer_logits(model, input_ids, attention_mask, answer_ids: tuple[int, int], **forward) -> torch.Tensor:
    """[batch, 2] fp32 logits of ("No", "Yes") at the last position, projected in fp32 from the final
    hidden state whatever the autocast (`lifelora.llm.logits`)."""
    return last_logits(
        model,
        rows=answer_ids,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=forward.pop("position_ids", positions_of(attention_mask)),
        use_cache=forward.pop("use_cache", False),
        **forward,
    )


def yes_probability(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1)[:, 1]


def length_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Row numbers in batches of similar length (little padding), the same for any number of processes."""
    order = np.argsort([len(p) for p in prompts], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(prompts), batch_size)]


@torch.no_grad()
def score_prompts(
    model,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    answer_ids: tuple[int, int],
    batch_size: int = 16,
    precision: str = "auto",
    progress: bool = True,
    routing: torch.Tensor | None = None,
) -> np.ndarray:
    """P(yes) per prompt. Under several processes (`torchrun`) each scores its share of the batches and
    all get every score back (`lifelora.distributed`).

    `routing` ([n, d_h], one row per prompt) is handed to a personalized adapter's forward."""
    device = next(model.parameters()).device
    batches = length_batches(prompts, batch_size)
    bar = tqdm(
        total=len(my_batches(batches)), desc="scoring", unit="batch", disable=not progress, leave=False
    )

    def score(rows: np.ndarray) -> np.ndarray:
        ids, mask = left_pad([prompts[r] for r in rows], pad_id)
        extra = {} if routing is None else {"routing": routing[torch.from_numpy(rows)].to(device)}
        with autocast(precision, device):
            logits = answer_logits(model, ids.to(device), mask.to(device), answer_ids, **extra)
        bar.update()
        return yes_probability(logits).cpu().numpy().astype(np.float32)

    scores = map_batches(batches, score, len(prompts))
    bar.close()
    return scores


@torch.no_grad()
def score_candidates(
    model,
    prefix: Sequence[int],
    continuations: Sequence[Sequence[int]],
    pad_id: int,
    answer_ids: tuple[int, int],
    batch_size: int = 32,
    precision: str = "auto",
) -> np.ndarray:
    """P(yes) of prefix + each continuation, running the shared prefix through the model once.

    The prefix's key/value cache is copied and repeated for each batch of continuations; those are
    left-padded (padding masked out between prefix and continuation) so the answer is the last column.
    """
    device = next(model.parameters()).device
    prefix_ids = torch.as_tensor([list(prefix)], dtype=torch.long, device=device)
    with autocast(precision, device):
        cache = model(input_ids=prefix_ids, use_cache=True).cache
    out = np.empty(len(continuations), dtype=np.float32)
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        ids, mask = left_pad(chunk, pad_id)
        ids, mask = ids.to(device), mask.to(device)
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(chunk))
        full_mask = torch.cat(
            [torch.ones(len(chunk), prefix_ids.shape[1], dtype=mask.dtype, device=device), mask], 1
        )
        with autocast(precision, device):
            logits = answer_logits(
                model,
                ids,
                full_mask,
                answer_ids,
                position_ids=positions_of(mask, start=prefix_ids.shape[1]),
                cache=past,
                use_cache=True,
            )
        out[start : start + len(chunk)] = yes_probability(logits).cpu().numpy()
    return out
