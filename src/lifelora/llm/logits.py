"""Last-position logits in fp32, computed from the final hidden state whatever autocast ran the body.

Under bf16 autocast the LM head's logits come back rounded to bf16: near 31 their step is 0.125–0.25,
so the "Yes"/"No" difference that decides P(yes) moves in those steps and hundreds of prompts share a
handful of scores. Here the head's input (the final, normalised hidden state) is taken as the model
computes it and projected again in fp32, onto only the vocabulary rows a caller needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The LM head of a causal LM, also through PEFT's and lifelora's adapter wrappers and DDP."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (not a causal LM?)")
    return head


def tail_logits(
    model: torch.nn.Module, positions: int, rows: Sequence[int] | None = None, **forward
) -> torch.Tensor:
    """[batch, positions, len(rows) (or vocab)] fp32 logits at the last positions of `model(**forward)`.

    The model still runs with `logits_to_keep=positions`; a forward hook keeps the head's input, which is
    then projected with autocast off. A plain linear head is projected onto only the rows asked for; any
    other head (an adapter's wrapper: trainable token rows, `modules_to_save`, LoRA) is called itself in
    fp32, since its `weight` may not hold the rows it computes (the backbone's weights are fp32: autocast
    does the bf16). Gradients flow through it as through the model's own logits."""
    head = output_head(model)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _module, args, _out: captured.append(args[0]))
    try:
        model(logits_to_keep=positions, **forward)
    finally:
        handle.remove()
    hidden = captured[-1][:, -positions:]
    with torch.autocast(hidden.device.type, enabled=False):
        if type(head) is not torch.nn.Linear:
            logits = head(hidden.float()).float()
            return logits if rows is None else logits[..., list(rows)]
        weight = head.weight if rows is None else head.weight[list(rows)]
        bias = None if head.bias is None else (head.bias if rows is None else head.bias[list(rows)])
        return F.linear(hidden.float(), weight.float(), None if bias is None else bias.float())


def last_logits(model: torch.nn.Module, rows: Sequence[int] | None = None, **forward) -> torch.Tensor:
    """[batch, len(rows)] (or [batch, vocab]) fp32 logits at the last position of `model(**forward)`."""
    return tail_logits(model, 1, rows, **forward)[:, -1]


def next_token_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy of `batch["labels"]` (one token id per row) as the token after each left-padded
    prompt, on fp32 logits projected from the final hidden state, whatever the autocast; a `routing`
    entry goes to a routed adapter's forward."""
    routing = {"routing": batch["routing"]} if "routing" in batch else {}
    logits = last_logits(
        model,
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
        **routing,
    )
    return F.cross_entropy(logits, batch["labels"])
