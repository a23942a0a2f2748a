"""What bf16-made item vectors would do to the demo's prompts (issue 26): the ML-100K item vectors of
SmolLM2 made in fp32 (as lifelora makes them) and under bf16 autocast (as the first release did on CPUs
with native bf16), then, with each, how many of the demo's 512 training and 200 test prompts retrieve
another history, and the zero-shot row on the 200 test rows (scored in fp32).

    .venv/bin/python benchmarks/prompts_across_precisions.py   # ~40 min on a 2-core AVX2 CPU (bf16 emulated)

Prints one JSON object last."""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from lifelora.config import load_config, shipped_config
from lifelora.data.store import open_prepared
from lifelora.llm.item_embeddings import mean_hidden_states, reduce
from lifelora.llm.item_text import item_descriptions
from lifelora.tasks.ctr.config import CTRConfig
from lifelora.tasks.ctr.task import CTRTask
from lifelora.tasks.jobs import evaluate


@torch.no_grad()
def bf16_hidden_states(backbone, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """The first release's item vectors on a native-bf16 CPU: the mean hidden state under bf16 autocast."""
    body, out = backbone.model.model, []
    for start in range(0, len(texts), batch_size):
        batch = backbone.tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = body(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
        out.append(((hidden.float() * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def main() -> None:
    data = open_prepared("ml-100k", prepare_missing=True)
    cfg = load_config(CTRConfig, shipped_config("llm/lora-ml100k-demo.yaml"), [])
    task = CTRTask(data, cfg.model)
    texts = item_descriptions(data.items, data.name)
    raw, seconds = {}, {}
    for name, make in (("fp32", mean_hidden_states), ("bf16", bf16_hidden_states)):
        start = time.perf_counter()
        raw[name] = make(task.backbone, texts)
        seconds[name] = round(time.perf_counter() - start, 1)
    relative = np.linalg.norm(raw["fp32"] - raw["bf16"], axis=1) / np.linalg.norm(raw["fp32"], axis=1)
    examples, zero_shot = {}, {}
    for name, vectors in raw.items():
        task._embeddings = {cfg.prompt.pca_dim: reduce(vectors, cfg.prompt.pca_dim)}
        examples[name] = {split: task.examples(cfg, split, n) for split, n in (("train", 512), ("test", 200))}
        metrics = evaluate(task, task.backbone.model, cfg.model_copy(update={"adapter": None}))
        zero_shot[name] = {key: round(metrics[key], 4) for key in ("AUC", "LogLoss", "gAUC")}
    changed = {}
    for split in ("train", "test"):
        a, b = examples["fp32"][split], examples["bf16"][split]
        rows = np.arange(len(a))
        changed[split] = {
            "prompts": len(a),
            "other_history": sum(
                x.tolist() != y.tolist() for x, y in zip(a.hist_items, b.hist_items, strict=True)
            ),
            "other_prompt_ids": sum(x != y for x, y in zip(a.prompts(rows), b.prompts(rows), strict=True)),
        }
    print(
        json.dumps(
            {
                "vector_relative_change": {
                    "median": float(np.median(relative)),
                    "max": float(relative.max()),
                },
                "changed": changed,
                "zero_shot": zero_shot,
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
