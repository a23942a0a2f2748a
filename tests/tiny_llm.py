"""Tiny random causal LMs (Llama, Qwen2) and a byte-level BPE tokenizer trained here, saved as model
directories that `load_backbone` reads: no hub, a few seconds."""

from __future__ import annotations

from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The user is a male. His job is writer. His age is 25-34.",
    "The user is a female. Her job is writer. Her age is 25-34.",
    "She watched the following movies in order in the past, and rated them:",
    "He watched the following movies in order in the past, and rated them:",
    "Based on the movies she has watched, deduce if she will like the movie ***",
    "Note that more stars the user rated the movie, the more the user liked the movie.",
    "You should ONLY tell me yes or no.",
    "Here is a movie. Its title is Movie 1 (1990). The movie's genre is Action, Comedy, Drama.",
    "'0. Movie 12 (1992) (5 stars)', '1. Movie 3 (1993) (2 stars)'",
    "A chat between a curious user and an artificial intelligence assistant. USER: ASSISTANT:",
] + ["Yes No Yes. No. Yes\nNo\n"] * 50


def tiny_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(kind: str, vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    shape = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**shape)).eval()
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True)).eval()
    raise ValueError(kind)


def save_tiny(directory: Path, kind: str = "llama", chat: bool = True, seed: int = 0) -> Path:
    tokenizer = tiny_tokenizer(chat)
    model = tiny_model(kind, len(tokenizer), seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
