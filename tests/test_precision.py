"""Answer logits in fp32 from the final hidden state, whatever the autocast: bf16 scoring must not round
P(yes) onto a handful of values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_llm import tiny_model, tiny_tokenizer

from lifelora.llm.logits import last_logits
from lifelora.tasks.ctr.scoring import score_prompts

YES_NO = (5, 6)  # two vocabulary rows standing in for the answer tokens


@pytest.fixture(scope="module")
def model():
    """A tiny Llama whose answer logits sit near 30, as a real model's do (there bf16's step is 0.125)."""
    vocab = len(tiny_tokenizer())
    lm = tiny_model("llama", vocab).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        head = lm.get_output_embeddings().weight
        head.copy_(torch.randn_like(head) * 0.02)
        shared = torch.zeros(head.shape[1])
        shared[0] = 20.0  # a large component both answers share: logits far from 0, close to each other
        head[list(YES_NO)] = shared + torch.randn(2, head.shape[1]) * 0.05
    return lm


def _prompts(n: int, vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [rng.integers(10, vocab, size=rng.integers(8, 24)).tolist() for _ in range(n)]


def test_bf16_and_fp32_yes_probabilities_agree(model):
    prompts = _prompts(64, model.config.vocab_size)
    fp32 = score_prompts(model, prompts, 0, YES_NO, batch_size=16, precision="fp32", progress=False)
    bf16 = score_prompts(model, prompts, 0, YES_NO, batch_size=16, precision="bf16", progress=False)
    assert np.abs(fp32 - bf16).max() <= 2e-3
    assert len(np.unique(bf16)) == len(prompts)  # no ties made by rounding


@torch.no_grad()
def test_the_model_own_bf16_logits_would_round_the_score(model):
    """What the fp32 projection avoids: the head's bf16 logits, far from 0, move in coarse steps."""
    prompts = _prompts(64, model.config.vocab_size)
    fp32 = score_prompts(model, prompts, 0, YES_NO, batch_size=16, precision="fp32", progress=False)
    rounded = []
    for prompt in prompts:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=torch.tensor([prompt]), logits_to_keep=1).logits[0, -1, list(YES_NO)]
        assert logits.dtype == torch.bfloat16
        rounded.append(torch.softmax(logits.float(), -1)[1].item())
    assert np.abs(np.array(rounded) - fp32).max() > 1e-2


def test_last_logits_match_the_model_logits_in_fp32_and_carry_gradients(model):
    ids = torch.tensor(_prompts(2, model.config.vocab_size)[:1] * 2)
    full = model(input_ids=ids, logits_to_keep=1).logits[:, -1]
    assert torch.allclose(last_logits(model, input_ids=ids), full, atol=1e-5)
    rows = last_logits(model, rows=YES_NO, input_ids=ids)
    assert torch.allclose(rows, full[:, list(YES_NO)], atol=1e-5)
    rows.sum().backward()  # the answer loss trains through the fp32 projection
    grad = model.get_input_embeddings().weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
