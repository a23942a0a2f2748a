"""`lifelora bench train-layout`: supervised next-item targets per second of a training step in the
`sequence` layout (windows of a user's items, a loss on every supervised item over the code rows) against
the `prompt` layout (one PESO prompt per target, the loss over the whole vocabulary), on ML-100K with the
demo's LoRA, the same adapter and precision, the two steps alternated A, B, A, B.

Each step is the training loop's own (`TrainStep`: forward, loss, backward, clipping, AdamW) on a fixed
batch of similar token count: `prompt_batch` prompts against `window_batch` windows.
"""

from __future__ import annotations

import resource
import statistics

import torch

from lifelora.bench.decoding import TINY
from lifelora.bench.timing import compare, interleave
from lifelora.config import load_config, shipped_config
from lifelora.data.store import open_prepared
from lifelora.llm.backbone import DEFAULT_MODEL, Backbone, load_backbone
from lifelora.precision import autocast, resolve
from lifelora.tasks.jobs import build
from lifelora.tasks.next_item.config import NextItemConfig
from lifelora.tasks.next_item.task import NextItemTask
from lifelora.training import TrainContext, TrainStep

CONFIG = "next_item/lora-ml100k-demo.yaml"
# the layouts are timed on the text codes of four tokens per item (needs no SASRec run; the figures in
# BENCHMARKS.md were measured so)
TEXT_CODES = ["semantic_ids.lens=null", "semantic_ids.levels=3", "semantic_ids.codebook_size=auto",
              "semantic_ids.token_init=mean"]  # fmt: skip


def _tiny_backbone(log) -> Backbone:
    """A random Llama of TINY's shape with SmolLM2's tokenizer and chat template (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_backbone(DEFAULT_MODEL, log=log).tokenizer
    torch.manual_seed(0)
    shape = {**TINY, "vocab_size": len(tokenizer)}
    model = LlamaForCausalLM(LlamaConfig(**shape)).eval()
    return Backbone("random-tiny-llama-h64-l2-seed0", model, tokenizer)


def bench_train_layout(quick: bool, dataset: str | None, log) -> dict:
    data = open_prepared(dataset or "ml-100k", prepare_missing=True)
    backbone = _tiny_backbone(log) if quick else load_backbone(DEFAULT_MODEL, log=log)
    base = load_config(NextItemConfig, shipped_config(CONFIG), TEXT_CODES)
    task = NextItemTask(data, backbone, base.semantic_ids, log=log)
    precision = resolve(base.train.precision)
    prompt_batch, window_batch, rounds = (8, 2, 3) if quick else (8, 4, 5)
    configs = {layout: base.model_copy(update={"layout": layout}) for layout in ("prompt", "sequence")}
    adapter = build(task, configs["prompt"])
    model = adapter.model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=base.train.lr)
    steps, batches, targets, tokens = {}, {}, {}, {}
    for layout, cfg in configs.items():
        size = prompt_batch if layout == "prompt" else window_batch
        examples = task.examples(cfg, "train", size)
        batch = examples.collate(list(range(size)))
        batches[layout] = batch
        targets[layout] = int((batch["labels"] != -100).sum()) // task.code_length
        tokens[layout] = int(batch["attention_mask"].sum())
        steps[layout] = TrainStep(
            task.loss(cfg),
            optimizer,
            max_grad_norm=base.train.max_grad_norm,
            forward_context=lambda: autocast(precision),
        )
    ctx = TrainContext(model, base.train)

    def step(layout: str) -> None:
        ctx.batch = batches[layout]
        steps[layout](model, ctx)

    log(
        f"timing next-item training steps of {backbone.name} on {data.name} ({precision}): "
        f"{prompt_batch} prompts ({tokens['prompt']} tokens, {targets['prompt']} targets) vs "
        f"{window_batch} windows ({tokens['sequence']} tokens, {targets['sequence']} targets)"
    )
    times = interleave({layout: (lambda layout=layout: step(layout)) for layout in configs}, rounds)
    per_target = {layout: [t / targets[layout] for t in times[layout]] for layout in configs}
    ratio = compare(
        per_target["prompt"], per_target["sequence"], ("prompt_per_target", "sequence_per_target")
    )
    adapter.unload()
    return {
        "model": backbone.name,
        "dataset": data.name,
        "precision": precision,
        "adapter": f"LoRA r={base.adapter.r} on {', '.join(base.adapter.target_modules)} + code token rows",
        "history": base.prompt.history,
        "window": base.prompt.window,
        "prompt_batch": {"prompts": prompt_batch, "tokens": tokens["prompt"], "targets": targets["prompt"]},
        "sequence_batch": {
            "windows": window_batch,
            "tokens": tokens["sequence"],
            "targets": targets["sequence"],
        },
        "step_s_prompt": round(statistics.median(times["prompt"]), 4),
        "step_s_sequence": round(statistics.median(times["sequence"]), 4),
        "per_target_time_ratio": ratio,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "targets_per_s_prompt": round(targets["prompt"] / statistics.median(times["prompt"]), 2),
        "targets_per_s_sequence": round(targets["sequence"] / statistics.median(times["sequence"]), 2),
        "speedup": ratio["ratio"],
    }
