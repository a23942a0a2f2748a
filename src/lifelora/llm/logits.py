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
    then projected with autocast off: onto only the rows asked for where the head's rows can be read
    (`head_rows`), else by calling the head itself in fp32 (the backbone's weights are fp32: autocast
    does the bf16). Gradients flow through it as through the model's own logits."""
    head = output_head(model)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _module, args, _out: captured.append(args[0]))
    try:
        model(logits_to_keep=positions, **forward)
    finally:
        handle.remove()
    hidden = captured[-1][:, -positions:]
    if rows is None:
        if type(head) is torch.nn.Linear:
            bias = None if head.bias is None else head.bias.float()
            return project_rows(hidden, head.weight.float(), bias)
        with torch.autocast(hidden.device.type, enabled=False):
            return head(hidden.float()).float()
    return row_logits(model, hidden, torch.as_tensor(list(rows), device=hidden.device))


def last_logits(model: torch.nn.Module, rows: Sequence[int] | None = None, **forward) -> torch.Tensor:
    """[batch, len(rows)] (or [batch, vocab]) fp32 logits at the last position of `model(**forward)`."""
    return tail_logits(model, 1, rows, **forward)[:, -1]


def next_token_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy of `batch["labels"]` (one token id per row) as the token after each left-padded
    prompt, on fp32 logits projected from the final hidden state, whatever the autocast; a `routing`
    entry goes to a routed adapter's forward."""
    return F.cross_entropy(last_logits(model, **training_inputs(batch)), batch["labels"])


def training_inputs(batch: dict) -> dict:
    """The forward's arguments of a collated training batch (left-padded ids, their mask and positions,
    no cache), with its `routing` where it has one (a routed adapter's)."""
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
    return {**inputs, "use_cache": False, **({"routing": batch["routing"]} if "routing" in batch else {})}


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The body of a causal LM (its decoder stack and final norm), also through adapter wrappers."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    while not hasattr(model, "get_decoder"):  # lifelora's PersonalizedModel wraps the LM as base_model
        model = model.base_model
    return model.get_decoder()


def final_hidden(model: torch.nn.Module, **forward) -> torch.Tensor:
    """[batch, tokens, hidden]: the final, normalised hidden state at every position (the LM head's input),
    with the head itself run on one position only: a caller projects the positions it supervises onto the
    rows it needs (`head_rows`) instead of the whole vocabulary at every position."""
    captured: list[torch.Tensor] = []
    handle = _decoder(model).register_forward_hook(
        lambda _module, _args, out: captured.append(out.last_hidden_state)
    )
    try:
        model(logits_to_keep=1, **forward)
    finally:
        handle.remove()
    return captured[-1]


def head_rows(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight [len(ids), hidden], bias or None) fp32: the rows of the LM head that give the logits of
    token `ids`, as the head computes them: a plain linear head's rows, PEFT's trainable token rows in
    place of the backbone's where the adapter trains them, a `modules_to_save` copy's rows. None for a
    head of another kind (e.g. LoRA on the head), whose rows exist only in its output."""
    head = output_head(model)
    layer = getattr(head, "token_adapter", None)  # PEFT's TrainableTokensWrapper
    if layer is not None and not (layer.merged or layer.disable_adapters):
        weight = layer.base_layer.weight[ids]
        for name in layer.active_adapters:
            index = torch.as_tensor(layer.token_indices[name], device=ids.device)
            row, column = (ids[:, None] == index[None, :]).nonzero(as_tuple=True)
            delta = layer.trainable_tokens_delta[name][column].to(weight.dtype)
            weight = weight.index_put((row,), delta)
        return weight.float(), None
    if layer is not None:
        head = layer.base_layer
    modules = getattr(head, "modules_to_save", None)  # PEFT's ModulesToSaveWrapper
    if modules is not None:
        active = [] if head.disable_adapters else head.active_adapters
        head = modules[active[0]] if active and active[0] in modules else head.original_module
    if type(head) is not torch.nn.Linear:
        return None
    bias = None if head.bias is None else head.bias[ids].float()
    return head.weight[ids].float(), bias


def project_rows(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """fp32 logits of `hidden` [..., hidden] on the rows of `head_rows`, with autocast off."""
    with torch.autocast(hidden.device.type, enabled=False):
        return F.linear(hidden.float(), weight, bias)


def row_logits(model: torch.nn.Module, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[..., len(ids)] fp32 logits of the final hidden states `hidden` [..., hidden] for token `ids`: onto
    the head's rows where they can be read, else through the head itself (then indexed)."""
    weights = head_rows(model, ids)
    if weights is not None:
        return project_rows(hidden, *weights)
    with torch.autocast(hidden.device.type, enabled=False):
        return output_head(model)(hidden.float()).float()[..., ids]
